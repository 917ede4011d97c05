"""Stand-ins for a kill in the resume tests: raise right after the n-th committed checkpoint."""

from __future__ import annotations

from subnets import checkpoint


class Stop(Exception):
    """Stands for a kill right after the n-th epoch checkpoint committed."""


def stop_after(monkeypatch, n: int, exc: type[BaseException] = Stop) -> dict:
    """Make ``checkpoint.save_state`` raise ``exc`` after its ``n``-th save; returns the counter
    (``{"n": saves so far}``)."""
    real = checkpoint.save_state
    count = {"n": 0}

    def save_state(*a, **k):
        real(*a, **k)
        count["n"] += 1
        if count["n"] == n:
            raise exc

    monkeypatch.setattr(checkpoint, "save_state", save_state)
    return count
