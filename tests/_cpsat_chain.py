"""Stand-alone CP-SAT solver for the nested MAC-budget chain knapsack (a test helper).

Runs in its own process (``python tests/_cpsat_chain.py < problem.json``) with nothing but
OR-Tools and the standard library imported: OR-Tools' native code shares libraries (protobuf,
abseil) with TensorFlow and jaxlib, and solving inside a pytest worker that had loaded those
crashed with a segmentation fault on CI. The model is written from the layer list alone,
independently of the chain tables that ``select_widths`` builds: one integer width per free group,
a product variable per layer between two free groups, and the kept importance as an element lookup
in scaled integer prefix sums.

Input JSON: ``{"free": {name: [lower, size]}, "fixed": {name: size},
"layers": [[in, out, coeff, kind], ...], "budget": int, "tables": {name: [int, ...]},
"seconds": float}``. Output JSON: ``{"widths": {name: int}, "optimal": bool}``.
"""

import json
import sys

from ortools.sat.python import cp_model


def solve(p: dict) -> dict:
    m = cp_model.CpModel()
    w = {n: m.NewIntVar(lo, size, n) for n, (lo, size) in p["free"].items()}
    sizes = {n: size for n, (_, size) in p["free"].items()} | p["fixed"]

    def width(name):
        return w.get(name, p["fixed"].get(name))

    macs = []
    for i, (gin, gout, coeff, kind) in enumerate(p["layers"]):
        a, b = width(gin), width(gout)
        if kind == "depthwise":
            macs.append(coeff * a)
        elif isinstance(a, int) or isinstance(b, int):
            macs.append(coeff * a * b)
        else:
            prod = m.NewIntVar(0, sizes[gin] * sizes[gout], f"x{i}")
            m.AddMultiplicationEquality(prod, [a, b])
            macs.append(coeff * prod)
    m.Add(sum(macs) <= p["budget"])
    vals = []
    for n, table in p["tables"].items():
        v = m.NewIntVar(0, table[-1], f"v_{n}")
        m.AddElement(w[n], table, v)
        vals.append(v)
    m.Maximize(sum(vals))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = p["seconds"]
    solver.parameters.num_workers = 2
    solver.parameters.random_seed = 0
    status = solver.Solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise SystemExit(f"CP-SAT found no solution: {solver.StatusName(status)}")
    return {"widths": {n: solver.Value(x) for n, x in w.items()},
            "optimal": status == cp_model.OPTIMAL}


if __name__ == "__main__":
    json.dump(solve(json.load(sys.stdin)), sys.stdout)
