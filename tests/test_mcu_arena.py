"""The int8 artifact's arena planner: buffers alive at the same step never share bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from subnets.export.int8_c import plan_arena

lives = st.lists(st.tuples(st.integers(0, 20), st.integers(0, 6), st.integers(1, 500)),
                 min_size=1, max_size=25).map(lambda xs: [(f, f + d, n) for f, d, n in xs])


@settings(max_examples=200, deadline=None)
@given(lives)
def test_live_buffers_never_overlap_and_fit_the_arena(buffers):
    offsets, total = plan_arena(buffers)
    for i, (f1, l1, n1) in enumerate(buffers):
        assert offsets[i] % 4 == 0 and offsets[i] + n1 <= total
        for j, (f2, l2, n2) in enumerate(buffers[:i]):
            if not (l1 < f2 or l2 < f1):  # both alive at some step
                assert offsets[i] + n1 <= offsets[j] or offsets[j] + n2 <= offsets[i]
    # never worse than giving every buffer its own bytes
    assert total <= sum((n + 3) // 4 * 4 for _, _, n in buffers)
