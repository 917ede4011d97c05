"""Tests for subnets.runtime.Portfolio: switching, memory accounting, bounds and its file."""

from __future__ import annotations

import json
import os
import struct
import zlib

import numpy as np
import pytest

from subnets import io
from subnets.io import FormatError
from subnets.runtime import Portfolio
from subnets.runtime import portfolio as portfolio_module


def sparse_variant(width: int, density: float, seed: int) -> dict:
    """A pruned-looking variant: conv/dense weights with most entries zero, plus norm stats."""
    rng = np.random.default_rng(seed)

    def weights(*shape):
        w = rng.normal(size=shape).astype(np.float32)
        return w * (rng.random(shape) < density)

    return {
        "params": {
            "conv0": {"kernel": weights(3, 3, 3, width), "bias": np.zeros(width, np.float32)},
            "dense": {"kernel": weights(width * 16, 10), "bias": np.zeros(10, np.float32)},
        },
        "batch_stats": {"bn0": {"mean": np.zeros(width), "var": np.ones(width)}},
    }


def assert_same(a, b):
    assert list(a) == list(b)
    for k in a:
        if isinstance(a[k], dict):
            assert_same(a[k], b[k])
        else:
            assert b[k].dtype == a[k].dtype and np.array_equal(a[k], b[k])


VARIANTS = {
    "dense": (sparse_variant(64, 1.0, 0), {"accuracy": 0.93, "macs": 1_000_000, "params": 12_000}),
    "s80": (sparse_variant(64, 0.2, 1), {"accuracy": 0.92, "macs": 200_000, "params": 2_400}),
    "s95": (sparse_variant(64, 0.05, 2), {"accuracy": 0.90, "macs": 50_000, "params": 600}),
    "small": (sparse_variant(16, 1.0, 3), {"accuracy": 0.85, "macs": 60_000, "params": 3_000}),
}


@pytest.fixture
def portfolio() -> Portfolio:
    p = Portfolio()
    for name, (variables, meta) in VARIANTS.items():
        p.add(name, variables, meta=meta)
    return p


def test_add_switch_meta(portfolio):
    assert portfolio.names == tuple(VARIANTS) and len(portfolio) == 4 and "s80" in portfolio
    assert portfolio.active is None and portfolio.variables is None
    for name, (variables, meta) in VARIANTS.items():
        out = portfolio.switch(name)
        assert portfolio.active == name and portfolio.variables is out
        assert_same(variables, out)
        assert portfolio.meta(name) == meta
    assert portfolio.switch("small") is portfolio.variables  # no-op switch returns the same dict


def test_switched_arrays_are_read_only_and_meta_is_a_copy(portfolio):
    w = portfolio.switch("s80")["params"]["conv0"]["kernel"]
    with pytest.raises(ValueError):
        w[0, 0, 0, 0] = 1.0
    portfolio.meta("s80")["accuracy"] = 0.0
    assert portfolio.meta("s80")["accuracy"] == 0.92


def test_memory_accounting(portfolio):
    dense = sum(leaf.nbytes for variables, _ in VARIANTS.values() for leaf in _leaves(variables))
    # An inflated variant is a whole safetensors file: its arrays plus a JSON header (< 1 KiB).
    assert dense <= portfolio.dense_bytes() <= dense + 1024 * 4
    assert portfolio.memory_bytes() == portfolio.compressed_bytes()
    for name in portfolio.names:
        portfolio.switch(name)
        assert portfolio.memory_bytes() == portfolio.compressed_bytes() + portfolio.inflated_bytes(
            name
        )
    # Sparse variants deflate well below their dense size; the dense one barely does.
    assert portfolio.compressed_bytes("s95") < 0.25 * portfolio.inflated_bytes("s95")
    assert portfolio.compressed_bytes("s80") < 0.5 * portfolio.inflated_bytes("s80")
    assert portfolio.memory_bytes() < portfolio.dense_bytes()
    portfolio.deactivate()
    assert portfolio.active is None and portfolio.memory_bytes() == portfolio.compressed_bytes()


def _leaves(tree):
    for v in tree.values():
        yield from _leaves(v) if isinstance(v, dict) else [np.asarray(v)]


def test_remove_and_name_errors(portfolio):
    portfolio.switch("s80")
    portfolio.remove("s80")
    assert portfolio.active is None and portfolio.names == ("dense", "s95", "small")
    with pytest.raises(KeyError, match="no variant 's80'"):
        portfolio.switch("s80")
    with pytest.raises(KeyError):
        portfolio.meta("s80")
    with pytest.raises(ValueError, match="already exists"):
        portfolio.add("dense", {})
    with pytest.raises(ValueError, match="non-empty str"):
        portfolio.add("", {})
    with pytest.raises(TypeError, match="unsupported dtype"):
        portfolio.add("bad", {"w": np.array(["x"])})
    assert "bad" not in portfolio


def test_bound_is_checked_before_inflating(portfolio, monkeypatch):
    small = portfolio.inflated_bytes("small")
    bounded = Portfolio.from_bytes(portfolio.to_bytes(), max_inflated_bytes=small)
    bounded.switch("small")

    def no_inflate(*args, **kwargs):
        raise AssertionError("inflated a variant over the bound")

    monkeypatch.setattr(portfolio_module.io, "loads", no_inflate)
    with pytest.raises(ValueError, match="over max_inflated_bytes"):
        bounded.switch("dense")
    assert bounded.active == "small"  # a refused switch changes nothing


def test_constructor_validates_arguments():
    with pytest.raises(ValueError, match="max_inflated_bytes"):
        Portfolio(max_inflated_bytes=-1)
    with pytest.raises(ValueError, match="level"):
        Portfolio(level=10)


def test_save_load_round_trip(portfolio, tmp_path):
    portfolio.switch("s95")
    path = tmp_path / "p.portfolio"
    portfolio.save(path)
    loaded = Portfolio.load(path)
    assert loaded.names == portfolio.names and loaded.active == "s95"
    assert loaded.memory_bytes() == portfolio.memory_bytes()
    for name, (variables, meta) in VARIANTS.items():
        assert loaded.meta(name) == meta
        assert_same(variables, loaded.switch(name))
    cold = Portfolio.load(path, activate=False)
    assert cold.active is None and cold.memory_bytes() == cold.compressed_bytes()
    assert os.listdir(tmp_path) == ["p.portfolio"]


def test_empty_portfolio_round_trip():
    p = Portfolio.from_bytes(Portfolio().to_bytes())
    assert p.names == () and p.active is None and p.dense_bytes() == 0


def test_load_refuses_active_over_bound(portfolio, tmp_path):
    portfolio.switch("dense")
    path = tmp_path / "p.portfolio"
    portfolio.save(path)
    with pytest.raises(ValueError, match="over max_inflated_bytes"):
        Portfolio.load(path, max_inflated_bytes=1000)
    assert Portfolio.load(path, max_inflated_bytes=1000, activate=False).active is None


def test_save_is_atomic(portfolio, tmp_path, monkeypatch):
    path = tmp_path / "p.portfolio"
    portfolio.save(path)
    old = path.read_bytes()

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", fail)
    portfolio.remove("dense")
    with pytest.raises(OSError):
        portfolio.save(path)
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["p.portfolio"]


# ----------------------------------------------------------------------------------------------
# Bad files.


@pytest.fixture(scope="module")
def small_file() -> bytes:
    p = Portfolio()
    p.add("a", {"w": np.zeros(5, np.float32)}, meta={"accuracy": 0.5})
    p.add("b", {"w": np.ones(3, np.int8), "e": {}})
    p.switch("b")
    return p.to_bytes()


def test_every_truncation_and_byte_flip_raises_format_error(small_file):
    for cut in range(len(small_file)):
        with pytest.raises(FormatError):
            Portfolio.from_bytes(small_file[:cut])
    for i in range(len(small_file)):
        bad = bytearray(small_file)
        bad[i] ^= 0x5A
        with pytest.raises(FormatError):
            Portfolio.from_bytes(bytes(bad))


def test_file_errors_name_the_file(small_file, tmp_path):
    path = tmp_path / "p.portfolio"
    path.write_bytes(small_file[:-10])
    with pytest.raises(FormatError, match=r"p\.portfolio: .*truncated"):
        Portfolio.load(path)
    path.write_bytes(small_file)
    with pytest.raises(FormatError, match=r"p\.portfolio: .*over max_bytes=64"):
        Portfolio.load(path, max_bytes=64)
    # A valid io file that is not a portfolio.
    io.save(path, {"w": np.zeros(2)})
    with pytest.raises(FormatError, match=r"p\.portfolio: not a portfolio"):
        Portfolio.load(path)


# Version-1 portfolios (subnets-v1 container and blobs) stay readable: the forged files below are
# version 1; version 2 (safetensors) has its own tests after them.
V1 = "subnets-v1"


def _container(variants: dict, meta: dict | None = None) -> bytes:
    meta = {"format": "subnets.portfolio", "version": 1, "active": None} | (meta or {})
    return io.dumps({"variants": variants}, meta=meta, format=V1)


def _blob(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.uint8)


GOOD_BLOB = io.dumps({"w": np.zeros(4, np.float32)}, compress=True, format=V1)


def _reforge_crc(data: bytes) -> bytes:
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


@pytest.mark.parametrize(
    "data, match",
    [
        (_container({"a": _blob(GOOD_BLOB)}, {"format": "other"}), "not a portfolio"),
        (_container({"a": _blob(GOOD_BLOB)}, {"version": 3}), "unsupported portfolio version"),
        (_container({"a": _blob(GOOD_BLOB)}, {"version": True}), "unsupported portfolio version"),
        (_container({"a": _blob(GOOD_BLOB)}, {"active": "zz"}), "active variant 'zz'"),
        (_container({"a": _blob(GOOD_BLOB)}, {"active": 3}), "active variant 3"),
        (
            io.dumps(
                {"variants": {}, "x": np.zeros(1)},
                meta={"format": "subnets.portfolio", "version": 1, "active": None}, format=V1,
            ),
            "exactly one dict",
        ),
        (_container({"a": np.zeros(4, np.float32)}), "not a named uint8 blob"),
        (_container({"a": {"nested": _blob(GOOD_BLOB)}}), "not a named uint8 blob"),
        (_container({"": _blob(GOOD_BLOB)}), "not a named uint8 blob"),
        (_container({"a": _blob(GOOD_BLOB[:-1])}), "variant 'a': truncated"),
        (_container({"a": _blob(b"\x80\x04pickle")}), "variant 'a': not a subnets file"),
        (_container({"a": _blob(GOOD_BLOB[:40] + b"x" + GOOD_BLOB[41:])}), "variant 'a': checksum"),
    ],
)
def test_forged_containers(data, match):
    with pytest.raises(FormatError, match=match):
        Portfolio.from_bytes(data)


def test_variant_over_max_bytes_is_rejected_at_load():
    big = io.dumps({"w": np.zeros(1 << 16, np.float32)}, compress=True, format=V1)  # 256 KiB
    data = _container({"a": _blob(big)})
    assert len(data) < 4096
    with pytest.raises(FormatError, match="variant 'a': inflated payload length .* over max_bytes"):
        Portfolio.from_bytes(data, max_bytes=4096)


def test_corrupt_deflate_stream_in_active_variant_is_format_error():
    # A blob whose CRC is valid but whose DEFLATE stream is not (only a forger makes this).
    head_len = struct.unpack_from("<I", GOOD_BLOB, 12)[0]
    start = 32 + head_len
    bad = bytearray(GOOD_BLOB)
    bad[start + 2 : -4] = b"\xff" * (len(bad) - start - 6)
    data = _container({"a": _blob(_reforge_crc(bytes(bad)))}, {"active": "a"})
    p = Portfolio.from_bytes(data, activate=False)
    with pytest.raises(FormatError, match="corrupt"):
        p.switch("a")
    with pytest.raises(FormatError, match="variant 'a': compressed payload is corrupt"):
        Portfolio.from_bytes(data)


def test_version_1_portfolio_still_loads_and_saves_as_version_2():
    data = _container({"a": _blob(GOOD_BLOB)}, {"active": "a"})
    p = Portfolio.from_bytes(data)
    assert p.names == ("a",) and p.switch("a")["w"].tolist() == [0.0] * 4
    p.add("b", {"w": np.ones(2, np.int8)})
    again = Portfolio.from_bytes(p.to_bytes())
    assert io.format_of(p.to_bytes()) == "safetensors"
    assert again.switch("a")["w"].tolist() == [0.0] * 4  # the v1 blob, kept as it was
    assert again.switch("b")["w"].tolist() == [1, 1]


def test_container_header_is_plain_json(small_file):
    head_len = struct.unpack_from("<Q", small_file, 0)[0]
    head = json.loads(small_file[8 : 8 + head_len])
    meta = {k: json.loads(v) for k, v in head["__metadata__"].items()
            if not k.startswith("subnets.")}
    assert meta == {"format": "subnets.portfolio", "version": 2, "active": "b"}
    assert [k for k in head if k != "__metadata__"] == ["variants/a", "variants/b"]


def test_container_and_variants_read_with_the_safetensors_package(small_file, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load

    path = tmp_path / "p.subnets"
    path.write_bytes(small_file)
    with safe_open(str(path), "np") as f:
        assert sorted(f.keys()) == ["variants/a", "variants/b"]
        assert json.loads(f.metadata()["active"]) == "b"
        blob = f.get_tensor("variants/a").tobytes()
    assert load(zlib.decompress(blob))["w"].tolist() == [0.0] * 5


def _v2_container(blobs: dict, meta: dict | None = None) -> bytes:
    meta = {"format": "subnets.portfolio", "version": 2, "active": None} | (meta or {})
    return io.dumps({"variants": {k: _blob(v) for k, v in blobs.items()}}, meta=meta)


_INNER = io.dumps({"w": np.zeros(4, np.float32)}, meta={"accuracy": 0.5})
V2_BLOB = zlib.compress(_INNER)


def _flip(data: bytes, i: int) -> bytes:
    bad = bytearray(data)
    bad[i] ^= 0x01
    return bytes(bad)


@pytest.mark.parametrize(
    "data, match",
    [
        (_v2_container({"a": V2_BLOB[:-1]}, {"active": "a"}),
         "variant 'a': compressed payload is truncated"),
        (_v2_container({"a": V2_BLOB[:5]}), "variant 'a': compressed file is truncated"),
        (_v2_container({"a": b"\x80\x04pickle"}), "variant 'a': compressed payload is corrupt"),
        (_v2_container({"a": zlib.compress(b"\xff" * 8 + _INNER[8:])}),
         "variant 'a': header length .* over"),
        (_v2_container({"a": zlib.compress(_INNER[:8] + b"[" + _INNER[9:])}),
         "variant 'a': not a safetensors file"),
        (_v2_container({"a": zlib.compress(io.dumps({"w": np.zeros(2)}, compress=True))}),
         "variant 'a': a compressed variant must hold an uncompressed subnets file"),
    ],
)
def test_forged_v2_containers(data, match):
    with pytest.raises(FormatError, match=match):
        Portfolio.from_bytes(data)


def test_v2_variant_damage_is_caught_at_switch():
    # Damage behind the header (array bytes) only shows when the variant is inflated: its CRC.
    inner = bytearray(_INNER)
    inner[-1] ^= 0x40
    data = _v2_container({"a": zlib.compress(bytes(inner))}, {"active": "a"})
    p = Portfolio.from_bytes(data, activate=False)
    with pytest.raises(FormatError, match="checksum mismatch"):
        p.switch("a")
    with pytest.raises(FormatError, match="variant 'a': checksum mismatch"):
        Portfolio.from_bytes(data)


def test_v2_variant_over_max_bytes_is_rejected_before_inflating():
    big = zlib.compress(io.dumps({"w": np.zeros(1 << 16, np.float32)}))  # 256 KiB inflated
    data = _v2_container({"a": big})
    assert len(data) < 4096
    with pytest.raises(FormatError, match="variant 'a': .*more than max_bytes=4096"):
        Portfolio.from_bytes(data, max_bytes=4096)
