"""Write the zoo's hand-declared channel graphs to ``tests/data/zoo_graphs.json``.

Run once while the zoo still had its graph builders (they are gone: running it now would
snapshot the traced graphs, which is not what the comparison needs):
``tests/test_graph_trace.py`` compares every traced graph with this snapshot, so the comparison
survives the builders' deletion. Shapes are the tests' small ones (``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE.parent))

from conftest import SMALL_SHAPES  # noqa: E402

import subnets  # noqa: E402

NUM_CLASSES = 7
FULL = {"cpreresnet20": (32, 32, 3)}  # full-size MACs checks


def norms_of(name: str) -> tuple[str, ...]:
    """The norm kinds a zoo model accepts."""
    out = []
    for norm in subnets.zoo.NORMS:
        try:
            subnets.zoo.create(name, num_classes=NUM_CLASSES, input_shape=SMALL_SHAPES.get(name),
                               norm=norm)
        except ValueError:
            continue
        out.append(norm)
    return tuple(out)


def snapshot() -> dict:
    graphs = {}
    for name in subnets.zoo.NAMES:
        for norm in norms_of(name):
            net = subnets.zoo.create(name, num_classes=NUM_CLASSES,
                                     input_shape=SMALL_SHAPES.get(name), norm=norm)
            graphs[f"{name}/{norm}"] = {"input_shape": list(net.input_shape),
                                        "macs": subnets.cost.macs(net),
                                        "graph": net.graph.to_dict()}
    full = {}
    for name, shape in FULL.items():
        net = subnets.zoo.create(name, num_classes=10, input_shape=shape)
        full[name] = {"input_shape": list(shape), "num_classes": 10,
                      "macs": subnets.cost.macs(net)}
    return {"num_classes": NUM_CLASSES, "graphs": graphs, "full": full}


def main() -> None:
    out = HERE / "zoo_graphs.json"
    text = json.dumps(snapshot(), sort_keys=True, separators=(",", ":"))
    fd, tmp = tempfile.mkstemp(dir=HERE, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, out)  # atomic: a crash never leaves a half-written snapshot
    print(f"wrote {out} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
