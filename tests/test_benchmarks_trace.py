import json
import math
import subprocess
import sys
from pathlib import Path

import subnets

ROOT = Path(__file__).resolve().parent.parent


def test_trace_benchmark_quick_reports_every_zoo_model():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "trace.py"), "--quick"],
                         capture_output=True, text=True, check=True, cwd=ROOT, timeout=600)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result["models"]) == set(subnets.zoo.NAMES)
    for name, seconds in result["models"].items():
        assert math.isfinite(seconds) and 0 < seconds < 30, (name, seconds)
