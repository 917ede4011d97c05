"""Tests for subnets.io: round trips, atomic saves, and every kind of bad input.

Generic tests run on both formats; the forged-layout ones are about the subnets-v1 layout (the
safetensors layout has its own in test_io_safetensors.py)."""

from __future__ import annotations

import json
import os
import struct
import tracemalloc
import zlib

import hypothesis.extra.numpy as hnp
import ml_dtypes
import numpy as np
import pytest
from _trees import SMALL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from subnets import io
from subnets.io import FormatError

# ----------------------------------------------------------------------------------------------
# Helpers.


def assert_same(a, b):
    """Same nesting, key order, dtypes, shapes and bits (bitwise, so NaN and -0.0 count)."""
    assert isinstance(b, dict)
    assert list(a) == list(b)
    for key in a:
        if isinstance(a[key], dict):
            assert_same(a[key], b[key])
        else:
            x, y = np.asarray(a[key]), b[key]
            assert isinstance(y, np.ndarray)
            assert y.dtype == x.dtype.newbyteorder("=") and y.shape == x.shape
            assert x.astype(x.dtype.newbyteorder("=")).tobytes() == y.tobytes()


def forge(
    header,
    payload: bytes = b"",
    *,
    compressed: bool = False,
    raw_len: int | None = None,
    version: int = 1,
    flags: int | None = None,
    header_len: int | None = None,
    stored_len: int | None = None,
) -> bytes:
    """Builds a file from the documented layout, with a valid CRC unless told otherwise.

    Written from the module docstring, not from io's code, so it also checks the documentation.
    """
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    stored = zlib.compress(payload) if compressed else payload
    prefix = struct.pack(
        "<8sHHIQQ",
        b"\x89SUBNET\n",
        version,
        int(compressed) if flags is None else flags,
        len(head) if header_len is None else header_len,
        len(stored) if stored_len is None else stored_len,
        len(payload) if raw_len is None else raw_len,
    )
    body = prefix + head + stored
    return body + struct.pack("<I", zlib.crc32(body))


def header(arrays=(), empty=(), meta=None):
    return {"arrays": list(arrays), "empty": list(empty), "meta": meta or {}}


def entry(path, dtype="float32", shape=(2,), offset=0):
    return {"path": list(path), "dtype": dtype, "shape": list(shape), "offset": offset}



V1 = "subnets-v1"
both_formats = pytest.mark.parametrize("fmt", io.FORMATS)

# ----------------------------------------------------------------------------------------------
# Round trips.

_NUMPY_DTYPES = [d for d in io.SUPPORTED_DTYPES if d != "bfloat16"]


@st.composite
def leaf_arrays(draw):
    name = draw(st.sampled_from(io.SUPPORTED_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    if name == "bfloat16":  # hypothesis knows no bfloat16: draw its bit patterns
        bits = draw(hnp.arrays(np.uint16, shape))
        return bits.view(ml_dtypes.bfloat16)
    dtype = np.dtype(name)
    if draw(st.booleans()) and dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">")  # non-native input must come back native, same values
    return draw(hnp.arrays(dtype, shape))


keys = st.text(max_size=6)
trees = st.recursive(
    st.dictionaries(keys, leaf_arrays(), max_size=3),
    lambda children: st.dictionaries(keys, st.one_of(leaf_arrays(), children), max_size=3),
    max_leaves=8,
)
metas = st.dictionaries(
    st.text(max_size=5),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=5),
        st.lists(st.integers(), max_size=3),
    ),
    max_size=4,
)


@settings(
    database=None, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(tree=trees, meta=metas, compress=st.booleans(), copy=st.booleans(),
       fmt=st.sampled_from(io.FORMATS))
def test_round_trip_random_trees(tree, meta, compress, copy, fmt):
    data = io.dumps(tree, meta=meta, compress=compress, format=fmt)
    assert io.format_of(data) == fmt
    out, meta_out = io.loads(data, copy=copy)
    assert_same(tree, out)
    assert meta_out == meta
    h = io.peek(data)
    assert h.compressed == compress and h.meta == meta


@both_formats
def test_round_trip_small_tree_all_dtypes_and_empties(fmt):
    tree = {
        name: np.arange(6).astype(io._DTYPES[name]).reshape(2, 3) for name in io.SUPPORTED_DTYPES
    }
    tree = {"e0": {}, "a": tree, "mid": {"deep": {}}, "s": np.float64(2.5), "z": np.zeros((0, 3))}
    for compress in (False, True):
        out, _ = io.loads(io.dumps(tree, compress=compress, format=fmt))
        assert_same(tree, out)
        assert out["e0"] == {} and out["mid"] == {"deep": {}}


@both_formats
def test_round_trip_empty_root_and_jax_arrays(fmt):
    import jax.numpy as jnp

    assert io.loads(io.dumps({}, format=fmt)) == ({}, {})
    tree = {"w": jnp.arange(5, dtype=jnp.bfloat16), "b": jnp.ones((2, 2))}
    out, _ = io.loads(io.dumps(tree, compress=True, format=fmt))
    assert out["w"].dtype == jnp.bfloat16 and np.array_equal(out["w"], np.asarray(tree["w"]))
    assert out["b"].dtype == np.float32


@both_formats
def test_copy_flag_controls_writability(fmt):
    data = io.dumps(SMALL, compress=True, format=fmt)
    writable, _ = io.loads(data)
    views, _ = io.loads(data, copy=False)
    writable["params"]["conv0"]["kernel"][0, 0] = 5.0
    assert not views["params"]["conv0"]["kernel"].flags.writeable


@both_formats
def test_meta_accepts_numpy_scalars_and_rejects_non_json(fmt):
    _, meta = io.loads(io.dumps({}, meta={"acc": np.float32(0.5), "n": np.int64(3)}, format=fmt))
    assert meta == {"acc": 0.5, "n": 3}
    with pytest.raises(TypeError, match="not JSON"):
        io.dumps({}, meta={"f": object()}, format=fmt)
    with pytest.raises(ValueError):
        io.dumps({}, meta={"acc": float("nan")}, format=fmt)
    with pytest.raises(TypeError, match="meta must be a dict"):
        io.dumps({}, meta=[1], format=fmt)
    with pytest.raises(ValueError, match="level"):
        io.dumps({}, compress=True, level=10, format=fmt)
    with pytest.raises(ValueError, match="format must be one of"):
        io.dumps({}, format="pickle")


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"w": np.array(["a"])}, "unsupported dtype"),
        ({"w": np.array([object()])}, "unsupported dtype"),
        ({"w": np.zeros(2, np.complex64)}, "unsupported dtype"),
        ({"w": None}, "not an array"),
        ({"w": "text"}, "not an array"),
        ({1: np.zeros(2)}, "not a str"),
        ([np.zeros(2)], "must be a dict"),
    ],
)
@both_formats
def test_dumps_rejects_unstorable_input(bad, match, fmt):
    with pytest.raises(TypeError, match=match):
        io.dumps(bad, format=fmt)


def test_layout_matches_documentation():
    data = io.dumps({"a": np.ones(3, np.int8), "b": np.ones(2, np.float32)}, format=V1)
    magic, version, flags, hlen, slen, rlen = struct.unpack_from("<8sHHIQQ", data)
    assert (magic, version, flags) == (b"\x89SUBNET\n", 1, 0)
    assert (32 + hlen) % 16 == 0 and slen == rlen == 16 + 8
    head = json.loads(data[32 : 32 + hlen])
    assert [a["offset"] for a in head["arrays"]] == [0, 16]
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])


# ----------------------------------------------------------------------------------------------
# Files and atomic saves.


@both_formats
def test_save_load_file(tmp_path, fmt):
    path = tmp_path / "v.subnets"
    for compress in (False, True):
        io.save(path, SMALL, meta={"acc": 0.9}, compress=compress, format=fmt)
        assert io.format_of(path.read_bytes()) == fmt
        out, meta = io.load(path)
        assert_same(SMALL, out) and meta == {"acc": 0.9}
    assert os.listdir(tmp_path) == ["v.subnets"]


def test_save_writes_safetensors_by_default(tmp_path):
    io.save(tmp_path / "v.subnets", SMALL)
    assert io.format_of((tmp_path / "v.subnets").read_bytes()) == "safetensors"


def _assert_old_file_intact(tmp_path, path, old):
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == [path.name], "temporary file left behind"


def test_save_keeps_old_file_when_encoding_fails(tmp_path):
    path = tmp_path / "v.subnets"
    io.save(path, SMALL)
    old = path.read_bytes()
    with pytest.raises(TypeError):
        io.save(path, {"w": np.array([object()])})
    _assert_old_file_intact(tmp_path, path, old)


@pytest.mark.parametrize("stage", ["write", "fsync", "replace"])
def test_save_keeps_old_file_when_disk_fails(tmp_path, monkeypatch, stage):
    path = tmp_path / "v.subnets"
    io.save(path, SMALL)
    old = path.read_bytes()
    real_write = os.write

    def half_write(fd, data):  # a disk that fills up halfway through
        if len(data) > 8:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    def fail(*args, **kwargs):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(io.os, stage, half_write if stage == "write" else fail)
    with pytest.raises(OSError):
        io.save(path, {"other": np.ones(100)})
    monkeypatch.undo()
    _assert_old_file_intact(tmp_path, path, old)
    assert_same(SMALL, io.load(path)[0])


def test_save_keeps_permissions(tmp_path):
    path = tmp_path / "v.subnets"
    io.save(path, SMALL)
    os.chmod(path, 0o640)
    io.save(path, {})
    assert os.stat(path).st_mode & 0o777 == 0o640


@both_formats
def test_load_errors_name_the_file(tmp_path, fmt):
    path = tmp_path / "bad.subnets"
    path.write_bytes(io.dumps(SMALL, format=fmt)[:-1])
    with pytest.raises(FormatError, match=r"bad\.subnets: .*truncated"):
        io.load(path)
    path.write_bytes(io.dumps(SMALL, format=fmt))
    with pytest.raises(FormatError, match=r"bad\.subnets: .* over max_bytes=100"):
        io.load(path, max_bytes=100)


# ----------------------------------------------------------------------------------------------
# Corrupt input: always FormatError, never another exception.


@both_formats
@pytest.mark.parametrize("compress", [False, True])
def test_every_truncation_raises_format_error(compress, fmt):
    data = io.dumps(SMALL, meta={"acc": 0.5}, compress=compress, format=fmt)
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            io.loads(data[:cut])
        with pytest.raises(FormatError):
            io.peek(data[:cut])


@both_formats
@pytest.mark.parametrize("compress", [False, True])
def test_every_byte_flip_raises_format_error(compress, fmt):
    # CRC-32 detects every error burst of up to 32 bits, so each single-byte change is caught.
    data = io.dumps(SMALL, compress=compress, format=fmt)
    for i in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[i] ^= mask
            with pytest.raises(FormatError):
                io.loads(bytes(bad))


@settings(database=None, max_examples=200, deadline=None)
@given(data=st.data())
def test_random_corruption_raises_format_error(data):
    fmt = data.draw(st.sampled_from(io.FORMATS))
    blob = bytearray(io.dumps(SMALL, compress=data.draw(st.booleans()), format=fmt))
    edits = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(blob) - 1), st.integers(1, 255)),
            min_size=1,
            unique_by=lambda e: e[0],
        )
    )
    for i, x in edits:
        blob[i] ^= x
    with pytest.raises(FormatError):
        io.loads(bytes(blob))


def test_trailing_bytes_and_bad_magic():
    data = io.dumps(SMALL, format=V1)
    with pytest.raises(FormatError, match="unexpected bytes"):
        io.loads(data + b"\0")
    with pytest.raises(FormatError, match="bad magic"):
        io.loads(b"PK\x03\x04" + data[4:])
    with pytest.raises(FormatError, match="bad magic"):
        io.loads(b"\x80\x04\x95")  # a pickle is refused at once


GOOD = header([entry(["w"])])
PAYLOAD = np.ones(2, np.float32).tobytes()


def test_forge_helper_makes_valid_files():
    out, _ = io.loads(forge(GOOD, PAYLOAD))
    assert out["w"].tolist() == [1.0, 1.0]
    assert io.loads(forge(GOOD, PAYLOAD, compressed=True))[0]["w"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"version": 2}, "version"),
        ({"flags": 6}, "unknown flags"),
        ({"header_len": 2**32 - 1}, "header length .* over max_bytes"),
        ({"stored_len": 2**63}, "payload length .* over max_bytes"),
        ({"raw_len": 2**64 - 1}, "inflated payload length .* over max_bytes"),
        ({"header_len": 10_000}, "truncated"),
        ({"raw_len": 4}, "declares 4"),
    ],
)
def test_forged_prefix_fields(kwargs, match):
    with pytest.raises(FormatError, match=match):
        io.loads(forge(GOOD, PAYLOAD, **kwargs), max_bytes=1 << 20)


def test_checksum_mismatch():
    data = bytearray(forge(GOOD, PAYLOAD))
    data[-1] ^= 1
    with pytest.raises(FormatError, match="checksum"):
        io.loads(bytes(data))


@pytest.mark.parametrize(
    "head, payload, match",
    [
        (b"{not json", PAYLOAD, "not valid UTF-8 JSON"),
        (b"\xff\xfe", PAYLOAD, "not valid UTF-8 JSON"),
        (b"[" * 100_000 + b"]" * 100_000, PAYLOAD, "not valid UTF-8 JSON"),
        (b'{"arrays":[],"empty":[],"meta":{"a":NaN}}', b"", "NaN"),
        (b'{"arrays":[],"empty":[],"meta":{"a":1e999}}', b"", "non-finite"),
        (b'{"arrays":[],"empty":[],"meta":{},"meta":{}}', b"", "repeats the key"),
        (b'{"arrays":[],"empty":[],"meta":{"n":' + b"9" * 5000 + b"}}", b"", "JSON"),
        ([], b"", "JSON object with keys"),
        ({"arrays": [], "empty": []}, b"", "JSON object with keys"),
        ({**header(), "extra": 1}, b"", "JSON object with keys"),
        ({**header(), "arrays": {}}, b"", "must be lists"),
        ({**header(), "meta": []}, b"", "'meta' must be a JSON object"),
        (header([entry(["w"], dtype="object")]), PAYLOAD, "unsupported dtype 'object'"),
        (header([entry(["w"], dtype="float128")]), PAYLOAD, "unsupported dtype"),
        (header([entry(["w"], dtype=5)]), PAYLOAD, "unsupported dtype"),
        (header([entry(["w"], shape=[-1])]), PAYLOAD, "non-negative ints"),
        (header([entry(["w"], shape=[1.5])]), PAYLOAD, "non-negative ints"),
        (header([entry(["w"], shape=[True, True])]), PAYLOAD, "non-negative ints"),
        (header([{**entry(["w"]), "shape": "2"}]), PAYLOAD, "non-negative ints"),
        (header([entry(["w"], shape=[1] * 33)]), PAYLOAD, "at most 32"),
        (header([entry(["w"], shape=[2**40, 2**40])]), PAYLOAD, "more than max_bytes"),
        (header([entry(["w"], shape=[2**64, 2**64])]), PAYLOAD, "more than max_bytes"),
        (header([entry(["w"], shape=[0, 2**70])]), b"", "more than max_bytes"),
        (header([entry(["w"], shape=[3])]), PAYLOAD, "outside the 8-byte payload"),
        (header([entry(["w"], shape=[1])]), PAYLOAD, "arrays end at byte 4"),
        (header([entry(["w"], offset=-16)]), PAYLOAD, "non-negative int"),
        (header([entry(["w"], offset=4)]), PAYLOAD, "outside"),
        (header([entry(["w"], offset=2**70)]), PAYLOAD, "outside"),
        (
            header([entry(["a"], shape=[1]), entry(["b"], shape=[1], offset=4)]),
            PAYLOAD * 3,
            "not the packed offset 16",
        ),
        (
            header([entry(["w"], shape=[1]), entry(["w"], shape=[1], offset=16)]),
            bytes(20),
            "appears twice",
        ),
        (
            header([entry(["w"], shape=[1]), entry(["w", "x"], shape=[1], offset=16)]),
            bytes(20),
            "passes through the array",
        ),
        (header([entry([])]), PAYLOAD, "cannot be the root"),
        (header([entry([1])]), PAYLOAD, "not a list of strings"),
        (header([{**entry(["w"]), "path": "w"}]), PAYLOAD, "not a list of strings"),
        (header([{**entry(["w"]), "extra": 0}]), PAYLOAD, "expected an object"),
        (header([entry(["w"])], [{"path": ["w"], "at": 1}]), PAYLOAD, "passes through"),
        (header([entry(["w", "x"])], [{"path": ["w"], "at": 0}]), PAYLOAD, "declared empty"),
        (header([entry(["w"])], [{"path": ["e"], "at": 2}]), PAYLOAD, "'at' 2"),
        (header([entry(["w"])], [{"path": ["e"], "at": True}]), PAYLOAD, "'at' True"),
        (
            header([entry(["w"])], [{"path": ["e"], "at": 1}, {"path": ["f"], "at": 0}]),
            PAYLOAD,
            "'at' 0",
        ),
        (header([entry(["w"])], [{"path": "e", "at": 0}]), PAYLOAD, "not a list of strings"),
        (header([entry(["w"])], [["e"]]), PAYLOAD, "expected an object"),
        (header([entry(["w"], dtype="bool", shape=[2])]), b"\x01\x02", "bool bytes"),
    ],
)
def test_forged_headers(head, payload, match):
    for compressed in (False, True):
        with pytest.raises(FormatError, match=match):
            io.loads(forge(head, payload, compressed=compressed), max_bytes=1 << 20)


@settings(
    database=None, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    head=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    ["arrays", "empty", "meta", "path", "dtype", "shape", "offset", "at"]
                ),
                c,
                max_size=4,
            )
        ),
        max_leaves=12,
    ),
    payload=st.binary(max_size=40),
    compressed=st.booleans(),
)
def test_fuzzed_headers_only_raise_format_error(head, payload, compressed):
    try:
        io.loads(forge(json.dumps(head).encode(), payload, compressed=compressed), max_bytes=4096)
    except FormatError:
        pass


# ----------------------------------------------------------------------------------------------
# Zip bombs: inflation is bounded by the declared size, which is bounded by max_bytes.


@pytest.fixture(scope="module")
def bomb() -> bytes:
    deflater = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    parts = [deflater.compress(chunk) for _ in range(64)]  # 64 MiB of zeros, ~64 KiB stored
    return b"".join(parts) + deflater.flush()


def _bomb_file(stored: bytes, raw_len: int) -> bytes:
    head = header([entry(["w"], dtype="uint8", shape=[raw_len])]) if raw_len else header()
    return forge(head, stored, flags=1, raw_len=raw_len)


@pytest.mark.parametrize("raw_len", [0, 1 << 20])
def test_zip_bomb_under_declared_size_stops_at_bound(bomb, raw_len):
    data = _bomb_file(bomb, raw_len)
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="more than the declared"):
            io.loads(data, max_bytes=2 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < (1 << 20) + (4 << 20), f"inflation allocated {peak} bytes"


def test_zip_bomb_declaring_its_size_is_over_max_bytes(bomb):
    with pytest.raises(FormatError, match="inflated payload length .* over max_bytes"):
        io.loads(_bomb_file(bomb, 64 << 20), max_bytes=2 << 20)


def test_bad_compressed_streams():
    raw = np.ones(2, np.float32).tobytes()
    good = zlib.compress(raw)
    cases = {
        "corrupt": good[:2] + b"\xff" * (len(good) - 2),
        "truncated": good[:-3],
        "bytes after the end": good + b"xx",
    }
    for match, stored in cases.items():
        with pytest.raises(FormatError, match=match):
            io.loads(_raw_forge(stored, 8))
    with pytest.raises(FormatError, match="inflates to 8 bytes, not 16"):
        io.loads(_raw_forge(good, 16, shape=[4]))


def _raw_forge(stored: bytes, raw_len: int, shape=(2,)) -> bytes:
    return forge(header([entry(["w"], shape=shape)]), stored, flags=1, raw_len=raw_len)


@both_formats
def test_max_bytes_must_be_valid(fmt):
    with pytest.raises(ValueError, match="max_bytes"):
        io.loads(io.dumps({}, format=fmt), max_bytes=-1)


@both_formats
def test_nesting_depth_is_bounded(fmt):
    deep: dict = {}
    node = deep
    for _ in range(70):
        node["k"] = {}
        node = node["k"]
    node["w"] = np.zeros(1, np.float32)
    with pytest.raises(FormatError, match="nests 71 levels deep, over 64"):
        io.loads(io.dumps(deep, format=fmt))
