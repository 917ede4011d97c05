"""Input checks of REDS width selection and of ``subnets nest``, before any work is done.

Budgets are fractions of the full network's resource in ``(0, 1]`` unless an amount carries an
explicit unit (``"2e6 macs"``, ``"150000 params"``, ``"60e3 bytes"``) or ``absolute=True`` is
passed; ``1.5`` alone is an error that says which of the two was meant. Scores must name groups of
the graph and be finite; ``min_units`` must be at least 1.

Example:
    >>> from subnets.nested.checks import parse_budget
    >>> parse_budget(0.5, ("macs",), {"macs": 1000.0})
    (500.0,)
    >>> parse_budget("200 macs", ("macs",), {"macs": 1000.0})
    (200.0,)
    >>> parse_budget(1.5, ("macs",), {"macs": 1000.0})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: budget 1.5 is above 1: ... write '1.5 macs' or pass absolute=True

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.3 (budgets as fractions of the full MACs).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

RESOURCES = ("macs", "params", "bytes")
_UNIT = re.compile(r"^\s*([-+0-9.eE]+|nan|inf)\s*([A-Za-z]+)\s*$", re.IGNORECASE)


def _number(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise ValueError(f"{what}: expected a number, got {x!r} ({type(x).__name__})")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{what} is {x}: budgets must be finite numbers")
    return x


def _one(x: Any, resource: str, full: float, absolute: bool) -> float:
    if isinstance(x, str):
        m = _UNIT.match(x)
        if not m:
            raise ValueError(f"budget {x!r}: write a fraction such as 0.5 or an amount with its "
                             f"unit such as '2e6 {resource}'")
        unit = m.group(2).lower()
        if unit != resource:
            raise ValueError(f"budget {x!r} is in {unit!r}, but this entry constrains "
                             f"{resource!r}")
        try:
            amount = float(m.group(1))
        except ValueError:
            raise ValueError(f"budget {x!r}: {m.group(1)!r} is not a number") from None
        if not math.isfinite(amount) or amount <= 0:
            raise ValueError(f"budget {x!r}: the amount must be a positive finite number")
        return amount
    b = _number(x, f"budget {x!r}")
    if b <= 0:
        raise ValueError(f"budget {b:g} must be positive")
    if absolute:
        return b
    if b > 1.0:
        raise ValueError(f"budget {b:g} is above 1: budgets are fractions of the full network's "
                         f"{resource} in (0, 1]; for an absolute amount write '{b:g} {resource}' "
                         f"or pass absolute=True")
    return b * full


def parse_budget(budget: Any, resources: Sequence[str], full: Mapping[str, float], *,
                 absolute: bool = False) -> tuple[float, ...]:
    """One level's budget as an absolute amount per resource.

    Args:
        budget: a fraction, an amount with a unit (``"2e6 macs"``), or a tuple of those, one per
            resource.
        resources: the constrained resources.
        full: each resource of the full network.
        absolute: read bare numbers as absolute amounts.

    Returns:
        The amount per resource.
    """
    parts = tuple(budget) if isinstance(budget, tuple | list) else (budget,) * len(resources)
    if len(parts) != len(resources):
        raise ValueError(f"budget {budget!r} has {len(parts)} entries for resources "
                         f"{tuple(resources)}")
    return tuple(_one(x, r, full[r], absolute) for x, r in zip(parts, resources, strict=True))


def check_budget_list(budgets: Any) -> list:
    """``budgets`` must be a non-empty list (or tuple) of per-level budgets."""
    if isinstance(budgets, str | bytes | numbers.Number) or not isinstance(budgets, Sequence):
        raise ValueError(f"budgets must be a list with one budget per level, got {budgets!r}; "
                         f"for one level write [{budgets!r}]")
    if len(budgets) == 0:
        raise ValueError("budgets is empty: give at least one level, e.g. [0.25, 0.5, 0.75]")
    return list(budgets)


def check_scores(graph: Any, scores: Mapping[str, Any], names: Sequence[str]) -> dict:
    """Scores per free group: known groups only, the right length, finite. Returns float64s."""
    if not isinstance(scores, Mapping):
        raise ValueError(f"scores must be a mapping {{group: scores}}, got {type(scores).__name__}")
    known = {g.name for g in graph.groups}
    unknown = sorted(str(n) for n in scores if n not in known)
    if unknown:
        raise ValueError(f"scores name groups that are not in the graph: {unknown} (groups: "
                         f"{sorted(known)})")
    missing = [n for n in names if n not in scores]
    if missing:
        raise ValueError(f"scores missing for groups {missing}")
    out = {}
    for n in names:
        s = np.asarray(scores[n], np.float64)
        if s.shape != (graph[n].size,):
            raise ValueError(f"scores for group {n!r} have shape {s.shape}, expected "
                             f"({graph[n].size},)")
        bad = np.flatnonzero(~np.isfinite(s))
        if bad.size:
            raise ValueError(f"scores for group {n!r} are not finite at unit {int(bad[0])} "
                             f"({s[bad[0]]}); {bad.size} of {s.size} units are NaN or inf")
        out[n] = s
    return out


def check_min_units(min_units: Any) -> int:
    if isinstance(min_units, bool) or not isinstance(min_units, numbers.Integral):
        raise ValueError(f"min_units must be an integer >= 1, got {min_units!r}")
    if min_units < 1:
        raise ValueError(f"min_units must be >= 1 (every group keeps at least one unit), got "
                         f"{min_units}")
    return int(min_units)


def check_min_fraction(min_fraction: Any) -> float:
    x = _number(min_fraction, "min_fraction") if not isinstance(min_fraction, str) else None
    if x is None or not 0.0 <= x <= 1.0:
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction!r}")
    return x


def floors(sizes: np.ndarray, min_units: int, min_fraction: float) -> np.ndarray:
    """Per group, the fewest units a level may keep (before capping at the group's size)."""
    min_units = check_min_units(min_units)
    min_fraction = check_min_fraction(min_fraction)
    frac = np.ceil(min_fraction * np.asarray(sizes) - 1e-9).astype(np.int64)
    return np.maximum(frac, min_units)


def check_graph_supported(net: Any, *, max_states: int | None = None) -> None:
    """Raise (naming the groups) if no exact width knapsack can handle the net's graph.

    Chains always can; other graphs need a path decomposition whose widest bag stays within
    ``max_states`` width combinations. Cheap: no table is built.
    """
    from subnets.kernels.knapsack import MAX_STATES, decompose

    graph = net.graph
    free = [g.name for g in graph.free]
    if not free:
        raise ValueError("the model has no free channel group: nothing to nest")
    pos = {n: i for i, n in enumerate(free)}
    edges = sorted({(min(pos[la.in_group], pos[la.out_group]),
                     max(pos[la.in_group], pos[la.out_group])) for la in graph.layers
                    if la.in_group in pos and la.out_group in pos
                    and la.in_group != la.out_group})
    sizes = [graph[n].size for n in free]
    _, bags = decompose(np.array(edges, np.int64).reshape(-1, 2), sizes)
    widest = max(bags, key=lambda b: math.prod(sizes[u] for u in b))
    n = math.prod(sizes[u] for u in widest)
    limit = MAX_STATES if max_states is None else max_states
    if n > limit:
        raise ValueError(f"the exact width knapsack cannot handle this model: its widest bag of "
                         f"groups {[free[u] for u in widest]} has {n:,} width combinations "
                         f"(limit {limit:,}); use select_widths(..., heuristic='lagrangian')")


def check_nest_args(args: Any) -> tuple[float, ...]:
    """Validate ``subnets nest`` arguments before any data is loaded or model trained.

    Checks the model against the method (the width knapsack must handle its graph;
    ``--objective kernels`` needs ``--score taylor``), the budgets (fractions in ``(0, 1]`` or
    amounts with a unit such as ``2e6macs``), ``--distill`` in ``[0, 1]``, ``--min-units >= 1``,
    ``--min-fraction`` in ``[0, 1]`` and ``--limit`` against ``--batch-size``.

    Returns:
        The budgets as fractions of the full model's resource.
    """
    from subnets import data, zoo

    for name in ("epochs", "finetune_epochs", "score_batches"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not (isinstance(args.distill, numbers.Real) and 0.0 <= args.distill <= 1.0):
        raise ValueError(f"--distill must be in [0, 1] (the weight of the full level's "
                         f"predictions), got {args.distill}")
    if args.min_units < 1:
        raise ValueError(f"--min-units must be >= 1 (every group keeps a unit), got "
                         f"{args.min_units}")
    if not 0.0 <= args.min_fraction <= 1.0:
        raise ValueError(f"--min-fraction must be in [0, 1], got {args.min_fraction}")
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        if args.limit < args.batch_size:
            raise ValueError(f"--limit {args.limit} is below --batch-size {args.batch_size}: "
                             f"not one full training batch; lower --batch-size or raise --limit")
    if args.objective == "kernels" and args.score != "taylor":
        raise ValueError(f"--objective kernels needs --score taylor (per-kernel |w*g| scores), "
                         f"got --score {args.score}")
    name = data.resolve(args.data, data_dir=args.data_dir)[0]
    meta = data.info(name)
    net = zoo.create(args.model, num_classes=meta.num_classes, input_shape=meta.input_shape)
    check_graph_supported(net)
    budgets = check_budget_list(list(args.budgets))
    resource = args.resource
    full = float(_full(net, resource))
    out = []
    for b in budgets:
        (amount,) = parse_budget(b, (resource,), {resource: full})
        if amount > full * (1 + 1e-12):
            raise ValueError(f"budget {b!r} is above the full model's {resource} ({full:,.0f})")
        out.append(amount / full)
    return tuple(out)


def _full(net: Any, resource: str) -> float:
    from subnets import cost

    return cost.macs(net) if resource == "macs" else cost.params(net)
