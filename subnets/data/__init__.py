"""Offline data: named data sets as numpy arrays, and key-driven minibatches.

Example:
    >>> import jax
    >>> from subnets import data
    >>> x, y = data.load("digits", "train")
    >>> data.DATASETS["digits"].num_classes
    10
    >>> xb, yb = next(data.batches(x, y, 32, key=jax.random.key(0)))
    >>> xb.shape
    (32, 8, 8, 1)
"""

from subnets.data.audio import HELLO_EDGE, MfccConfig, mfcc
from subnets.data.batches import batches, epochs, num_batches
from subnets.data.idx import read_idx, write_idx
from subnets.data.loaders import (
    DATASETS,
    DEFAULT,
    FASHION_MNIST_DIR,
    SPLITS,
    DatasetInfo,
    announce,
    fashion_mnist_dir,
    info,
    load,
    resolve,
)
from subnets.data.source import DataSource, as_source

__all__ = [
    "DATASETS",
    "DEFAULT",
    "DataSource",
    "FASHION_MNIST_DIR",
    "HELLO_EDGE",
    "SPLITS",
    "DatasetInfo",
    "MfccConfig",
    "announce",
    "as_source",
    "batches",
    "epochs",
    "fashion_mnist_dir",
    "info",
    "load",
    "mfcc",
    "num_batches",
    "read_idx",
    "resolve",
    "write_idx",
]
