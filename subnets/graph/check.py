"""Compare a hand-declared graph with the one traced from the model's code."""
from __future__ import annotations


def check(graph, apply_fn, variables, x):
    raise NotImplementedError
