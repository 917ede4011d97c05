"""REDS width selection: our exact chain DP vs OR-Tools CP-SAT on the same coupled MAC model.

For each Hello-Edge KWS model (DNN/CNN/DS-CNN S/M/L) and MAC budgets 0.25/0.5/0.75 this builds the
knapsack that :func:`subnets.nested.select_widths` solves (value = prefix sums of descending
importance per group, cost = exact coupled MACs, at least ``min_units`` per group) and solves it

* with :func:`subnets.kernels.knapsack.solve_chain` (the DP; median of a few warm runs), and
* with CP-SAT: one integer width per group, the coupled cost through ``w_g * w_{g+1}``
  (``AddMultiplicationEquality``), the value through ``AddElement`` on the prefix-sum table
  scaled to integers (``1e6 / max score``), under a time limit.

Modes: ``nested`` (bottom-up: each level's lower widths are the DP's previous level, the same box
for both solvers) and ``independent`` (every budget alone; 0.25 equals the nested one and is not
repeated). Both solvers' answers are re-evaluated in floating point on the same tables, so the DP
value must be >= CP-SAT's (the DP is exact) and <= CP-SAT's proven bound plus the rounding of the
scaled objective. Also reported: the reference's full-fan-in approximation
(``select_widths(..., cost="full_fanin")``), its true MAC fraction and objective gap to the DP.

Speed (``speed`` in the JSON): median CPU time of three nested solves after warm-up, DS-CNN-L
with the chain kernel (what ``select_widths`` runs on chains), the graph kernel on the same chain
and ``select_widths`` end to end (ratios to the chain kernel in the same run), and cPreResNet20
(32x32x3, residual stages) through ``select_widths`` and the exact graph kernel.

Score sets: ``uniform`` (U[0, 1), seed 0) and ``lognormal`` (sigma 1: heavy-tailed like Taylor
scores of a trained net; a synthetic stand-in, training nine models is not cheap).

Usage:
    python benchmarks/knapsack.py [--quick] [--cp-sat-seconds 60] [--out knapsack.png]

Prints one JSON object as the last stdout line.

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.3 (knapsack, solved there with Gurobi).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from subnets.nested import ChainProblem

MODELS = ("dnn-s", "dnn-m", "dnn-l", "cnn-s", "cnn-m", "cnn-l", "ds-cnn-s", "ds-cnn-m", "ds-cnn-l")


def make_scores(net, kind: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    draw = {"uniform": lambda n: rng.random(n),
            "lognormal": lambda n: rng.lognormal(0.0, 1.0, n)}
    if kind not in draw:
        raise ValueError(f"unknown score set {kind!r}; choose from {sorted(draw)}")
    return {g.name: draw[kind](g.size) for g in net.graph.free}


def integer_model(pb: ChainProblem, scores: dict) -> dict:
    """CP-SAT's exact-integer form of the DP's MAC tables, and the scale of its integer values.

    CP-SAT needs the algebraic form ``CU[g, w] = a_g w``, ``CP[g, u, v] = b_g u v``, ``K``, all
    integers; the asserts check that the tables of ``pb`` (one resource: MACs) have it.
    """
    CU, CP, K = pb.CU[0], pb.CP[0], pb.K[0]
    G = len(pb.order)
    w = np.arange(CU.shape[1], dtype=np.float64)
    a = np.array([CU[g, 1] for g in range(G)])
    b = np.array([CP[g, 1, 1] for g in range(G - 1)])
    for g in range(G):
        assert np.array_equal(CU[g], a[g] * w), f"group {pb.order[g]}: unit cost not linear"
    for g in range(G - 1):
        assert np.array_equal(CP[g], b[g] * np.outer(w, w)), f"pair {g}: cost not bilinear"
    assert all(float(x).is_integer() for x in [*a, *b, K]), "MAC coefficients not integers"
    return {"a": a.astype(np.int64), "b": b.astype(np.int64), "k": int(K),
            "scale": 1e6 / max(float(np.max(s)) for s in scores.values())}


def cpsat_solve(pb: ChainProblem, im: dict, budget: float, lo: np.ndarray, hi: np.ndarray, *,
                seconds: float, workers: int) -> dict:
    """CP-SAT on the coupled model: integer widths, products, element-table values."""
    from ortools.sat.python import cp_model
    from subnets.kernels.knapsack import FEAS_RTOL, evaluate_chain

    t0 = time.perf_counter()
    m = cp_model.CpModel()
    G = len(lo)
    w = [m.NewIntVar(int(lo[g]), int(hi[g]), f"w{g}") for g in range(G)]
    terms = [int(im["a"][g]) * w[g] for g in range(G)]
    for g in range(G - 1):
        if im["b"][g]:
            p = m.NewIntVar(int(lo[g] * lo[g + 1]), int(hi[g] * hi[g + 1]), f"p{g}")
            m.AddMultiplicationEquality(p, [w[g], w[g + 1]])
            terms.append(int(im["b"][g]) * p)
    m.Add(sum(terms) + im["k"] <= math.floor(budget + FEAS_RTOL * max(1.0, budget)))
    vals = []
    for g in range(G):
        table = [int(round(x * im["scale"])) for x in pb.U[g]]
        v = m.NewIntVar(0, max(table), f"v{g}")
        m.AddElement(w[g], table, v)
        vals.append(v)
    m.Maximize(sum(vals))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(seconds)
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = 0
    status = solver.Solve(m)
    ms = 1e3 * (time.perf_counter() - t0)
    out = {"cpsat_ms": ms, "cpsat_status": solver.StatusName(status),
           "cpsat_optimal": status == cp_model.OPTIMAL, "cpsat_value": None,
           "cpsat_bound": solver.BestObjectiveBound() / im["scale"], "cpsat_widths": None}
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        ws = np.array([solver.Value(x) for x in w], np.int64)
        out["cpsat_widths"] = ws.tolist()
        out["cpsat_value"] = evaluate_chain(pb.U, None, pb.CU, pb.CP, pb.K, ws)[0]
    return out


def dp_solve(pb: ChainProblem, budget: float, lo: np.ndarray,
             repeats: int) -> tuple[np.ndarray, float, float]:
    from subnets.kernels.knapsack import solve_chain

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        w, v, _ = solve_chain(pb.U, None, pb.CU, pb.CP, pb.K, [budget], lo, pb.sizes)
        times.append(1e3 * (time.perf_counter() - t0))
    return w, v, float(np.median(times))


def run_model(name: str, kind: str, args, budgets: list[float], modes: list[str]) -> dict:
    from subnets.kernels.knapsack import evaluate_chain

    from subnets import cost, zoo
    from subnets.nested import chain_problem, select_widths

    net = zoo.create(name, num_classes=12)
    scores = make_scores(net, kind, args.seed)
    pb = chain_problem(net, scores, min_units=args.min_units)  # what select_widths solves
    im = integer_model(pb, scores)
    total = pb.full["macs"]
    seconds = args.cp_sat_seconds
    res: dict = {"groups": dict(zip(pb.order, pb.sizes.tolist(), strict=True)),
                 "total_macs": int(total), "round_unit": 0.5 / im["scale"]}
    t0 = time.perf_counter()
    nested = select_widths(net, scores, budgets, min_units=args.min_units)
    res["select_widths_nested_ms"] = 1e3 * (time.perf_counter() - t0)
    for mode in modes:
        ff = select_widths(net, scores, budgets, min_units=args.min_units, cost="full_fanin",
                           order="bottom_up" if mode == "nested" else "independent")
        lo = pb.floor.copy()
        rows = {}
        for i, frac in enumerate(budgets):
            B = frac * total
            w, v, ms = dp_solve(pb, B, lo, args.repeats)
            row = {"dp_value": v, "dp_ms": ms, "dp_widths": w.tolist(),
                   "dp_true_frac": cost.macs(net, dict(zip(pb.order, w.tolist(),
                                                           strict=True))) / total}
            if mode == "nested":
                assert w.tolist() == [nested[i][n] for n in pb.order], "DP != select_widths"
            if mode == "independent" and i == 0 and "nested" in res:
                row.update({k: x for k, x in res["nested"][str(frac)].items() if "cpsat" in k})
            else:
                row.update(cpsat_solve(pb, im, B, lo, pb.sizes, seconds=seconds,
                                       workers=args.cp_sat_workers))
            if row["cpsat_widths"] is not None:
                cw = dict(zip(pb.order, row["cpsat_widths"], strict=True))
                row["cpsat_true_frac"] = cost.macs(net, cw) / total
            fw = np.array([ff[i][n] for n in pb.order], np.int64)
            fv = evaluate_chain(pb.U, None, pb.CU, pb.CP, pb.K, fw)[0]
            row["full_fanin_true_frac"] = cost.macs(net, ff[i]) / total
            row["full_fanin_value"] = fv
            row["full_fanin_gap"] = 1.0 - fv / v
            rows[str(frac)] = row
            if mode == "nested":
                lo = w
        res[mode] = rows
    return res


def _cpu_ms(fn, repeats: int) -> float:
    """Median CPU time of ``fn()`` in ms (process time: fair on a shared machine), warm."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(1e3 * (time.process_time() - t0))
    return float(np.median(times))


def speed(args, budgets: list[float]) -> dict:
    """CPU time of three nested solves: DS-CNN-L (chain) and cPreResNet20 (residual graph).

    On DS-CNN-L the chain kernel (the solver ``select_widths`` uses on chains, unchanged) is the
    reference; the graph kernel solves the same chain for comparison, and ``select_widths``
    adds table building and checks. cPreResNet20 goes through the graph kernel.
    """
    from subnets.kernels.knapsack import solve_chain, solve_graph

    from subnets import cost, zoo
    from subnets.nested import chain_problem, select_widths
    from subnets.nested.tables import graph_problem

    out: dict = {"repeats": args.speed_repeats, "clock": "process_time (CPU)"}
    net = zoo.create("ds-cnn-l", num_classes=12)
    scores = make_scores(net, "uniform", args.seed)
    pb = chain_problem(net, scores, min_units=args.min_units)
    gp = graph_problem(net, scores, min_units=args.min_units)

    def nested(solve):
        lo, res = pb.floor.copy(), []
        for f in budgets:
            lo = solve(f * pb.full["macs"], lo)
            res.append(lo)
        return res

    def chain():
        return nested(lambda B, lo: solve_chain(pb.U, None, pb.CU, pb.CP, pb.K, B, lo,
                                                pb.sizes)[0])

    def graph():
        return nested(lambda B, lo: solve_graph(gp.U, None, gp.CU, gp.CP, gp.K, B, lo,
                                                gp.sizes, gp.edges)[0])

    r = args.speed_repeats
    c_ms = _cpu_ms(chain, r)
    g_ms = _cpu_ms(graph, r)
    s_ms = _cpu_ms(lambda: select_widths(net, scores, budgets, min_units=args.min_units), r)
    v_chain = [float(pb.U[np.arange(len(w)), w].sum()) for w in chain()]
    v_graph = [float(gp.U[np.arange(len(w)), w].sum()) for w in graph()]
    out["ds-cnn-l"] = {"chain_kernel_ms": c_ms, "graph_kernel_ms": g_ms,
                       "select_widths_ms": s_ms, "graph_over_chain": g_ms / c_ms,
                       "select_over_chain": s_ms / c_ms,
                       "values_agree": bool(np.allclose(v_chain, v_graph, rtol=1e-12))}
    res = zoo.create("cpreresnet20", num_classes=10, input_shape=(32, 32, 3))
    rs = make_scores(res, "uniform", args.seed)
    levels, info = select_widths(res, rs, budgets, min_units=args.min_units, return_info=True)
    full = cost.macs(res)
    out["cpreresnet20"] = {
        "select_widths_ms": _cpu_ms(lambda: select_widths(res, rs, budgets,
                                                          min_units=args.min_units), r),
        "true_frac": [cost.macs(res, w) / full for w in levels],
        "values": [i["value"] for i in info], "solver": info[0]["solver"],
        "nested": all(a[g] <= b[g] for a, b in zip(levels, levels[1:], strict=False)
                      for g in a)}
    return out


def check(results: dict, tol_rel: float = 1e-9) -> list[str]:
    """Violations of DP >= CP-SAT incumbent and DP <= CP-SAT bound (+ scaled rounding)."""
    bad = []
    for kind, per_model in results.items():
        for name, res in per_model.items():
            G = len(res["groups"])
            for mode in ("nested", "independent"):
                for frac, r in res.get(mode, {}).items():
                    slack = tol_rel * abs(r["dp_value"]) + 1e-12
                    if r["cpsat_value"] is not None and r["dp_value"] < r["cpsat_value"] - slack:
                        bad.append(f"{kind}/{name}/{mode}/{frac}: DP below CP-SAT")
                    # The scaled table rounds each group by <= 0.5 unit of 1/scale.
                    if r["dp_value"] > r["cpsat_bound"] + G * res["round_unit"] + slack:
                        bad.append(f"{kind}/{name}/{mode}/{frac}: DP above CP-SAT's bound")
    return bad


def plot(results: dict, path: str, modes: list[str]) -> None:
    from subnets._plot import panels

    kinds = list(results)
    with panels(path, len(kinds), 1, figsize=(11, 3.6 * len(kinds)), dpi=120) as axes:
        for ax, kind in zip(axes[:, 0], kinds, strict=True):
            labels, dp, cs, opt = [], [], [], []
            for name, res in results[kind].items():
                for frac, r in res["nested"].items():
                    labels.append(f"{name} {float(frac):.2f}")
                    dp.append(r["dp_ms"])
                    cs.append(r["cpsat_ms"])
                    opt.append(r["cpsat_optimal"])
            x = np.arange(len(labels))
            ax.plot(x, dp, "o-", label="exact chain DP (ours)")
            ax.plot(x, cs, "s--", color="C1", label="CP-SAT (filled: proven optimal)")
            for xi, c, o in zip(x, cs, opt, strict=True):
                ax.plot(xi, c, "s", color="C1", mfc="C1" if o else "white")
            ax.set_yscale("log")
            ax.set_ylabel("solve time [ms]")
            ax.set_xticks(x, labels, fontsize=7, rotation=60, ha="right")
            ax.set_title(f"bottom-up nested MAC budgets, {kind} scores")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="S models, 3 s CP-SAT, nested only")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--budgets", default="0.25,0.5,0.75")
    p.add_argument("--scores", default="uniform,lognormal", help="score sets, comma-separated")
    p.add_argument("--modes", default="nested,independent")
    p.add_argument("--cp-sat-seconds", type=float, default=60.0)
    p.add_argument("--cp-sat-workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="DP runs per case (median)")
    p.add_argument("--speed-repeats", type=int, default=31,
                   help="runs of the three-budget speed cases (median CPU time)")
    p.add_argument("--min-units", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="PNG of solve times (log axis)")
    args = p.parse_args(argv)
    models = args.models.split(",")
    kinds = args.scores.split(",")
    modes = args.modes.split(",")
    if args.quick:
        models = [m for m in models if m.endswith("-s")]
        kinds, modes, args.cp_sat_seconds, args.repeats = kinds[:1], ["nested"], 3.0, 3
        args.speed_repeats = min(args.speed_repeats, 5)
    for m in modes:
        if m not in ("nested", "independent"):
            raise ValueError(f"--modes: unknown mode {m!r}")
    budgets = sorted(float(b) for b in args.budgets.split(","))

    from subnets.kernels.knapsack import solve_chain
    from tqdm import tqdm

    # Compile (or load from cache) the Numba kernels outside every timed call.
    t0 = time.perf_counter()
    solve_chain(np.array([[0.0, 1.0, 2.0]]), None, np.array([[0.0, 1.0, 2.0]]), None, 0.0, 1.0,
                [1], [2])
    warm_s = time.perf_counter() - t0
    results: dict = {}
    cases = [(k, m) for k in kinds for m in models]
    for kind, name in tqdm(cases, disable=not sys.stderr.isatty(), desc="knapsack"):
        res = run_model(name, kind, args, budgets, modes)
        results.setdefault(kind, {})[name] = res
    bad = check(results)
    fast = speed(args, budgets)
    if not fast["ds-cnn-l"]["values_agree"]:
        bad.append("ds-cnn-l: graph kernel and chain kernel disagree")
    out = {"benchmark": "knapsack", "quick": args.quick, "budgets": budgets, "modes": modes,
           "speed": fast,
           "cp_sat_seconds": args.cp_sat_seconds, "cp_sat_workers": args.cp_sat_workers,
           "numba_warmup_s": warm_s, "violations": bad, "results": results}
    if args.out:
        from subnets._plot import side_plot

        out["png"] = side_plot(lambda p: plot(results, p, modes), args.out)
    return out


if __name__ == "__main__":
    result = main()
    print(json.dumps(result))
    sys.exit(1 if result["violations"] else 0)
