"""Command-line flags and data loading shared by the pruning benchmarks (reconvene, shifter)."""

from __future__ import annotations

import argparse

import numpy as np

from subnets.data.train_test import load_train_test


def add_run_flags(p: argparse.ArgumentParser, *, limit: int, repeats: int,
                  out_help: str = "PNG path") -> None:
    """``--epochs --batch-size --limit --repeats --seed --out --quick``, with these defaults."""
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, default=limit)
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help=out_help)
    p.add_argument("--quick", action="store_true", help="smoke run (~30 s)")


def load_limited(name: str, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                 np.ndarray, int]:
    """``x, y, x_test, y_test`` (first ``limit`` of each split) and the number of classes."""
    (x, y), (xt, yt) = load_train_test(name, limit=limit)
    return x, y, xt, yt, int(max(y.max(), yt.max())) + 1
