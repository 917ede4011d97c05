"""subnets.io's safetensors format: the documented layout, the safetensors package both ways,
forged and damaged files (always a FormatError), bounded header lengths and inflation."""

from __future__ import annotations

import json
import struct
import tracemalloc
import zlib

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from _trees import SMALL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from subnets import io
from subnets.io import FormatError

# ----------------------------------------------------------------------------------------------
# A forger written from the _safetensors module docstring, not from its code.


TOKEN = b'"subnets.crc32":"'


def with_crc(file: bytes) -> bytes:
    """Fill in the CRC as documented: of the whole file, its 8 digits read as 00000000."""
    at = file.index(TOKEN) + len(TOKEN)
    zeroed = file[:at] + b"00000000" + file[at + 8 :]
    return zeroed[:at] + f"{zlib.crc32(zeroed):08x}".encode() + zeroed[at + 8 :]


def forge(tensors: dict, data: bytes = b"", *, meta: dict | None = None, layout=None,
          crc: bool = True, head_len: int | None = None, raw_header: bytes | None = None) -> bytes:
    """tensors: {name: entry}; meta: caller keys (JSON-encoded here); layout: dict or None."""
    metadata = {k: json.dumps(v) for k, v in (meta or {}).items()}
    if layout is not False:
        metadata["subnets.layout"] = json.dumps(
            layout or {"format": "subnets.safetensors", "version": 1, "empty": []})
    if crc and layout is not False:
        metadata["subnets.crc32"] = "00000000"
    header = {"__metadata__": metadata, **tensors}
    head = raw_header if raw_header is not None else json.dumps(
        header, separators=(",", ":")).encode()
    file = struct.pack("<Q", len(head) if head_len is None else head_len) + head + data
    return with_crc(file) if crc and TOKEN in file else file


def t(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


TWO = np.ones(2, np.float32).tobytes()


def test_forger_makes_valid_files():
    out, meta = io.loads(forge({"w": t()}, TWO, meta={"a": [1]}))
    assert out["w"].tolist() == [1.0, 1.0] and meta == {"a": [1]}


def test_layout_matches_documentation():
    data = io.dumps({"a/b": {"x~": np.ones(3, np.int8)}, "f": np.ones(2, np.float64)},
                    meta={"levels": [{"c1": 8}]})
    (n,) = struct.unpack_from("<Q", data)
    assert (8 + n) % 8 == 0 and data[8:9] == b"{"
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    assert [k for k in header if k != "__metadata__"] == ["a~1b/x~0", "f"]  # RFC 6901 escapes
    assert header["f"] == t("F64", (2,), (0, 16))  # the largest itemsize first: aligned
    assert header["a~1b/x~0"] == t("I8", (3,), (16, 19)) and len(body) == 19
    metadata = header["__metadata__"]
    assert metadata["levels"] == '[{"c1":8}]'  # caller keys JSON-encoded
    assert json.loads(metadata["subnets.layout"]) == {
        "format": "subnets.safetensors", "version": 1, "empty": []}
    assert with_crc(data) == data and len(metadata["subnets.crc32"]) == 8


# ----------------------------------------------------------------------------------------------
# The safetensors package reads ours, and we read its.


def test_safetensors_package_reads_our_files(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load, load_file

    tree = {k: v for k, v in SMALL.items() if k != "half"}  # numpy has no bfloat16
    path = tmp_path / "m.subnets"
    io.save(path, tree, meta={"graph": {"groups": ["c1"]}, "accuracy": 0.5})
    flat = load_file(str(path))
    assert sorted(flat) == ["params/conv0/bias", "params/conv0/kernel", "params/flag", "step"]
    np.testing.assert_array_equal(flat["params/conv0/kernel"], tree["params"]["conv0"]["kernel"])
    assert flat["params/flag"].dtype == np.bool_ and flat["step"].shape == ()
    with safe_open(str(path), "np") as f:
        assert json.loads(f.metadata()["graph"]) == {"groups": ["c1"]}
        assert json.loads(f.metadata()["accuracy"]) == 0.5
    compressed = io.dumps(tree, compress=True)
    inner = load(compressed)["deflated"].tobytes()
    assert sorted(load(zlib.decompress(inner))) == sorted(flat)


def test_we_read_files_written_by_the_safetensors_package(tmp_path):
    from safetensors.numpy import save, save_file

    arrays = {"params/conv/kernel": np.ones((3, 3, 1, 2), np.float32),
              "head.bias": np.arange(4, dtype=np.int64), "bn/mean": np.zeros(2, np.float16)}
    save_file(arrays, str(tmp_path / "hf.safetensors"), metadata={"framework": "np"})
    tree, meta = io.load(tmp_path / "hf.safetensors")
    assert meta == {"framework": "np"}  # a foreign file's metadata, as strings
    assert set(tree) == {"params", "head.bias", "bn"}
    np.testing.assert_array_equal(tree["params"]["conv"]["kernel"], arrays["params/conv/kernel"])
    np.testing.assert_array_equal(tree["head.bias"], arrays["head.bias"])
    assert tree["bn"]["mean"].dtype == np.float16
    with pytest.raises(FormatError, match="passes through the array"):
        io.loads(save({"a": np.zeros(1), "a/b": np.zeros(1)}))


_PLAIN = [d for d in io.SUPPORTED_DTYPES if d != "bfloat16"]


@st.composite
def plain_trees(draw):
    names = draw(st.lists(st.lists(st.text(max_size=4), min_size=1, max_size=3), max_size=5,
                          unique_by=lambda p: p[0]))
    tree = {}
    for path in names:
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                break
        else:
            if path[-1] not in node:
                dtype = np.dtype(draw(st.sampled_from(_PLAIN)))
                shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
                node[path[-1]] = draw(hnp.arrays(dtype, shape))
    return tree


def _flat(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flat(v, (*prefix, k))
        else:
            yield (*prefix, k), v


@settings(database=None, max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(tree=plain_trees())
def test_property_the_safetensors_package_sees_every_array_by_its_escaped_path(tree):
    from safetensors.numpy import load

    data = io.dumps(tree)
    seen = load(data)
    want = {"/".join(k.replace("~", "~0").replace("/", "~1") for k in p): a
            for p, a in _flat(tree)}
    assert set(seen) == set(want)
    for name, a in want.items():
        assert seen[name].dtype == a.dtype and seen[name].shape == a.shape
        assert seen[name].tobytes() == a.tobytes()
    back, _ = io.loads(data)
    assert dict(_flat(back)).keys() == dict(_flat(tree)).keys()


def test_keys_with_slashes_and_tildes_round_trip():
    tree = {"a/b": {"~": np.ones(1, np.int8), "": np.zeros(2, np.uint16)}, "a": {"b": np.ones(1)}}
    out, _ = io.loads(io.dumps(tree))
    assert list(out) == ["a/b", "a"] and list(out["a/b"]) == ["~", ""]
    assert out["a"]["b"].tolist() == [1.0]


def test_reserved_names_are_refused():
    with pytest.raises(ValueError, match="reserved"):
        io.dumps({}, meta={"subnets.layout": 1})
    with pytest.raises(ValueError, match="__metadata__"):
        io.dumps({"__metadata__": np.zeros(1)})


# ----------------------------------------------------------------------------------------------
# Damage: every bit flip, every truncation, forged fields.


@pytest.mark.parametrize("compress", [False, True])
def test_every_single_bit_flip_is_a_format_error(compress):
    data = io.dumps(SMALL, meta={"acc": 0.5, "levels": [{"c": 4}]}, compress=compress)
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(FormatError):
                io.loads(bytes(bad))


@pytest.mark.parametrize(
    "tensors, data, match",
    [
        ({"w": t("F8_E4M3")}, TWO, "unsupported dtype 'F8_E4M3'"),
        ({"w": t("float32")}, TWO, "unsupported dtype"),
        ({"w": {**t(), "extra": 1}}, TWO, "expected an object"),
        ({"w": {"dtype": "F32", "shape": [2]}}, TWO, "expected an object"),
        ({"w": t(shape=(-2,))}, TWO, "non-negative ints"),
        ({"w": t(shape=(True, 2))}, TWO, "non-negative ints"),
        ({"w": t(shape=[1] * 33)}, TWO, "at most 32"),
        ({"w": t(shape=(2**40, 2**40))}, TWO, "more than max_bytes"),
        ({"w": t(offsets=(0, 2**70))}, TWO, "outside the 8-byte data"),
        ({"w": t(offsets=(-8, 0))}, TWO, "two non-negative ints"),
        ({"w": t(offsets=(0,))}, TWO, "two non-negative ints"),
        ({"w": t(offsets=(0, 4))}, TWO, "span 4 bytes, dtype and shape need 8"),
        ({"w": t(shape=(1,), offsets=(0, 4))}, TWO, "tensors end at byte 4"),
        ({"w": t(shape=(1,), offsets=(4, 8))}, TWO, "starts at byte 4, expected 0"),
        ({"a": t(shape=(1,), offsets=(0, 4)), "b": t(shape=(1,), offsets=(0, 4))}, TWO,
         "starts at byte 0, expected 4"),
        ({"w": t(), "w/x": t(offsets=(8, 16))}, TWO * 2, "passes through the array"),
        ({"w~2": t()}, TWO, "'~' not followed by 0 or 1"),
        ({"/".join(["k"] * 70): t()}, TWO, "nests 70 levels deep"),
        ({"w": t("BOOL", (2,), (0, 2))}, b"\x01\x02", "bool bytes"),
    ],
)
def test_forged_tensor_entries(tensors, data, match):
    with pytest.raises(FormatError, match=match):
        io.loads(forge(tensors, data), max_bytes=1 << 20)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"crc": False}, "has 'subnets.layout' but no 'subnets.crc32'"),
        ({"layout": {"format": "subnets.safetensors", "version": 2, "empty": []}},
         "version 2"),
        ({"layout": {"format": "pickle", "version": 1}}, "names no known format"),
        ({"layout": {"format": "subnets.safetensors", "version": 1}}, "exactly the keys"),
        ({"layout": {"format": "subnets.safetensors", "version": 1, "empty": [[["e"], 5]]}},
         "'at' 5"),
        ({"raw_header": b'{"w": 1, "w": 2}'}, "repeats the key"),
        ({"raw_header": b"[1, 2]"}, "bad magic"),
        ({"raw_header": b'{"a": NaN}'}, "NaN"),
        ({"raw_header": b'{"__metadata__": {"a": 1}}'}, "map strings to strings"),
        ({"raw_header": b'{"__metadata__": []}'}, "map strings to strings"),
        ({"raw_header": b'{"__metadata__": {"subnets.crc32": "0"}}'}, "no 'subnets.layout'"),
        ({"raw_header": b"{\xff}"}, "not valid UTF-8 JSON"),
        ({"raw_header": b"{" * 50_000 + b"}" * 50_000}, "not valid UTF-8 JSON"),
        ({"head_len": 2**64 - 1}, "header length .* over the bound 100000000"),
        ({"head_len": 10_000}, "truncated: .* promises at least 10008"),
    ],
)
def test_forged_headers(kwargs, match):
    with pytest.raises(FormatError, match=match):
        io.loads(forge({"w": t()}, TWO, **kwargs), max_bytes=1 << 20)


def test_header_length_over_max_bytes():
    data = forge({"w": t()}, TWO, head_len=90) + bytes(100)
    with pytest.raises(FormatError, match="header length 90 is over max_bytes=80"):
        io.loads(data[:80], max_bytes=80)


def test_crc_mismatch_and_meta_checks():
    data = bytearray(forge({"w": t()}, TWO))
    data[-1] ^= 0x10
    with pytest.raises(FormatError, match="checksum mismatch"):
        io.loads(bytes(data))
    with pytest.raises(FormatError, match="metadata 'a' is not valid UTF-8 JSON"):
        io.loads(_bad_meta())


def _bad_meta() -> bytes:
    header = {"__metadata__": {"a": "not json",
                               "subnets.layout": json.dumps({"format": "subnets.safetensors",
                                                             "version": 1, "empty": []}),
                               "subnets.crc32": "00000000"}}
    head = json.dumps(header, separators=(",", ":")).encode()
    return with_crc(struct.pack("<Q", len(head)) + head)


def test_the_crc_field_must_appear_once_in_the_documented_form():
    good = forge({"w": t()}, TWO)
    spaced = good.replace(TOKEN, b'"subnets.crc32": "', 1)  # same JSON, other bytes
    spaced = struct.pack("<Q", struct.unpack_from("<Q", spaced)[0] + 1) + spaced[8:]
    with pytest.raises(FormatError, match="exactly once"):
        io.loads(spaced)
    twice = forge({"w": t()}, TWO, meta={"x": "\"subnets.crc32\":\"00000000"})
    assert io.loads(twice)[1] == {"x": '"subnets.crc32":"00000000'}  # escaped in a string


@settings(database=None, max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    head=st.dictionaries(
        st.sampled_from(["w", "a/b", "__metadata__", "x~1"]),
        st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=4),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(
                         st.sampled_from(["dtype", "shape", "data_offsets", "subnets.layout",
                                          "subnets.crc32", "format", "version", "empty"]),
                         c, max_size=4), max_leaves=10), max_size=3),
    data=st.binary(max_size=40),
)
def test_fuzzed_headers_only_raise_format_error(head, data):
    raw = json.dumps(head).encode()
    try:
        io.loads(struct.pack("<Q", len(raw)) + raw + data, max_bytes=4096)
    except FormatError:
        pass


# ----------------------------------------------------------------------------------------------
# Bounds: the header length is checked before the file is read; inflation stops at its bound.


def test_forged_header_length_is_refused_before_reading_the_file(tmp_path):
    path = tmp_path / "sparse.subnets"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 400 << 20) + b'{"')
        f.truncate(512 << 20)  # a sparse 512 MiB file: costs no disk
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match=r"sparse\.subnets: header length 419430400 is "
                                              r"over the bound 100000000"):
            io.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"read {peak} bytes before refusing the header length"
    with open(path, "r+b") as f:
        f.write(struct.pack("<Q", 1 << 20))  # a plausible length, but over max_bytes
    with pytest.raises(FormatError, match="over max_bytes=1000"):
        io.load(path, max_bytes=1000)


def _deflated_file(stream: bytes) -> bytes:
    layout = {"format": "subnets.safetensors.deflate", "version": 1}
    return forge({"deflated": t("U8", (len(stream),), (0, len(stream)))}, stream, layout=layout)


def test_deflated_bomb_inflates_only_up_to_its_declared_size():
    inner = io.dumps({"w": np.zeros(1 << 20, np.uint8)})  # declares 1 MiB
    deflater = zlib.compressobj(9)
    stream = deflater.compress(inner) + b"".join(
        deflater.compress(bytes(1 << 20)) for _ in range(63)) + deflater.flush()
    data = _deflated_file(stream)
    assert len(data) < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="more than the declared"):
            io.loads(data, max_bytes=4 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < (1 << 20) + (4 << 20), f"inflation allocated {peak} bytes"


def test_deflated_file_declaring_more_than_max_bytes_is_refused_from_its_header():
    data = io.dumps({"w": np.zeros(8 << 20, np.uint8)}, compress=True)
    assert len(data) < 64 << 10
    with pytest.raises(FormatError, match="over max_bytes=1048576|more than max_bytes=1048576"):
        io.loads(data, max_bytes=1 << 20)
    header = io.peek(data)
    assert header.compressed and header.arrays[0].shape == (8 << 20,)


@pytest.mark.parametrize(
    "stream, match",
    [
        (b"\x78\x9c\xff\xff", "corrupt"),
        (zlib.compress(io.dumps({"w": np.ones(3)}))[:-6], "truncated"),
        (zlib.compress(io.dumps({"w": np.ones(3)})) + b"xx", "after the end"),
        (zlib.compress(b"\x10\0\0\0\0\0\0\0[" + b" " * 15), "not a safetensors file"),
        (zlib.compress(io.dumps({"w": np.ones(3)}, compress=True)), "must hold an uncompressed"),
    ],
)
def test_bad_deflated_streams(stream, match):
    with pytest.raises(FormatError, match=match):
        io.loads(_deflated_file(stream))


def test_a_deflated_file_holds_exactly_one_tensor():
    layout = {"format": "subnets.safetensors.deflate", "version": 1}
    data = forge({"deflated": t("U8", (4,), (0, 4)), "x": t("U8", (4,), (4, 8))}, bytes(8),
                 layout=layout)
    with pytest.raises(FormatError, match="exactly one uint8 tensor 'deflated'"):
        io.loads(data)
