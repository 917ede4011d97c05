"""A small pytree of every dtype kind the file-format tests round-trip (float, bool, int, bfloat16,
an empty collection)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

SMALL = {
    "params": {
        "conv0": {"kernel": np.arange(12, dtype=np.float32).reshape(3, 4), "bias": np.zeros(4)},
        "flag": np.array([True, False, True]),
    },
    "batch_stats": {},
    "step": np.int32(7),
    "half": np.ones(3, ml_dtypes.bfloat16),
}
