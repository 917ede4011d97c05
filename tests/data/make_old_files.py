"""Write ``tests/data/old_files/``: files as subnets wrote them before safetensors (fa79d4e).

Run once with the OLD code on the path, from an export of that commit::

    git archive fa79d4e | tar -x -C /tmp/old && cd /tmp/old
    PYTHONPATH=/tmp/old python /path/to/tests/data/make_old_files.py \
        /path/to/tests/data/old_files /path/to/tests

``tests/test_interop.py`` loads them with the current code and compares the outputs with
``expected.json`` (computed by the old code), so the files stay readable after the old writers
change or go. Running it with the current code would write the new format instead.
"""

import json
import sys

import jax
import numpy as np

sys.path.insert(0, sys.argv[2])
from _linen_mlp import linen_mlp  # noqa: E402

from subnets import export, io  # noqa: E402
from subnets.runtime import Portfolio  # noqa: E402
from subnets.runtime.family import Family  # noqa: E402

out = sys.argv[1]
net = linen_mlp(10)
v = net.init(jax.random.key(0))
levels = export.uniform_levels(net.graph, [0.5, 1.0])
stats = [jax.tree.map(lambda a, s=s: np.asarray(a) + s, v["batch_stats"]) for s in (0.5, 0.0)]
fam = Family(net, v, levels, level_batch_stats=stats)
fam.save(f"{out}/family.subnets", meta={"note": "fa79d4e"})
x = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
p = Portfolio(model=net)
for i in range(2):
    p.add(f"level_{i}", fam.level_variables(i), meta={"level": i})
p.switch("level_0")
p.save(f"{out}/portfolio.subnets")
io.save(f"{out}/level_0.subnets", fam.level_variables(0),
        meta={"graph": net.graph.to_dict(), "accuracy": 0.5}, compress=True)
expected = {"written_by": "subnets fa79d4e (subnets-v1 files: family v2, portfolio v1)",
            "x": x.tolist(),
            "family": [np.asarray(fam.apply(x, i)).tolist() for i in range(2)],
            "levels": fam.levels}
with open(f"{out}/expected.json", "w") as f:
    json.dump(expected, f, indent=1)
