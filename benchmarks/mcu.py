"""Int8 nested C artifact on microcontrollers: instructions per MAC (QEMU), flash, switch cost.

The zoo's DS-CNN-S traced to its program (``--quick``: a tiny DS-CNN-pattern program; 4 levels)
is quantised once, exported with ``subnets.export.nested_c``, checked bit-exact against
TFLite-Micro on every level (host gcc), cross-built for Cortex-M4 (DSP) and Cortex-M0+ code and
run under ``qemu-system-arm -icount shift=0`` (M0+ code on the M3 mps2-an385 board). Timer ticks
are 40 instructions, so counts are multiples of 40.

Usage: ``python benchmarks/mcu.py [--quick]``; the last line is a JSON object.

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 5; Lai et al., CMSIS-NN (arXiv:1801.06601).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _traced_dscnn_s():
    """The zoo's DS-CNN-S (traced by the zoo), 4 uniform levels (random initial weights)."""
    import jax

    import subnets
    from subnets.export import uniform_levels
    from subnets.runtime.family import Family

    net = subnets.zoo.create("ds-cnn-s", num_classes=12, input_shape=(49, 10, 1))
    v = jax.tree.map(np.asarray, net.init(jax.random.key(0)))
    return Family(net, v, uniform_levels(net.graph, [0.25, 0.5, 0.75, 1.0]))


def _float_artifact() -> dict:
    """Instructions per MAC of the float32 artifact it replaces (zoo ds-cnn-s, 49x10x1, 4
    uniform levels: the same layer shapes), M4F hard float and M0+ soft float, full level."""
    import jax

    import subnets
    from subnets import export
    from subnets.export import firmware
    from subnets.runtime.family import Family

    net = subnets.zoo.create("ds-cnn-s", num_classes=12, input_shape=(49, 10, 1))
    fam = Family(net, net.init(jax.random.key(0)),
                 export.uniform_levels(net.graph, [0.25, 0.5, 0.75, 1.0]))
    x = np.random.default_rng(0).normal(0, 1, (1, 49, 10, 1)).astype(np.float32)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        m = export.nested_c(fam, tmp, name="model", int8=False)
        for cpu in ("m4", "m0plus"):
            r = firmware.run(firmware.build(tmp, x, cpu, float32=True), cpu, timeout=900)
            out[cpu] = round(r[-1]["run_instructions"] / m["levels"][-1]["macs"], 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="narrow model, 2 examples")
    args = ap.parse_args(argv)
    import _mcu_models as mm
    from test_mcu_int8 import _host_outputs, _tflm

    from subnets.export import firmware
    from subnets.export.int8_tflite import level_tflite
    from subnets.export.nested import nested_c, prepare

    if args.quick:
        fam, label = mm.dscnn(k=2), "dscnn-pattern k=2 (tiny)"
    else:
        fam, label = _traced_dscnn_s(), "zoo ds-cnn-s traced (49x10x1, 12 classes)"
    rep = np.random.default_rng(5).normal(0, 1, (4 if args.quick else 16,)
                                          + fam.net.graph.input_shape)
    with tempfile.TemporaryDirectory() as tmp:
        m = nested_c(fam, tmp, representative=rep, name="model")
        steps, qz = prepare(fam, rep)
        xq = np.clip(np.round(rep / m["input"]["scale"]) + m["input"]["zero_point"], -128,
                     127).astype(np.int8)
        host = _host_outputs(Path(tmp), xq, len(fam.levels))
        tfl = [level_tflite(steps, qz["widths"][i], i) for i in range(len(fam.levels))]
        exact = [bool(np.array_equal(host[i], _tflm(t, xq))) for i, t in enumerate(tfl)]
        from subnets.export.tflm import measure_arena

        tflm_arena = measure_arena(tfl[-1])
        own = mm.dscnn(k=2, per_level_stats=True) if args.quick else mm.dscnn_s(
            per_level_stats=True)
        m_own = nested_c(own, Path(tmp) / "own", representative=rep, name="model")
        ex = xq[:2]
        res = {cpu: firmware.run(firmware.build(tmp, ex, cpu), cpu)
               for cpu in ("m4", "m0plus")}
    float_ipm = _float_artifact() if not args.quick else {}
    levels = []
    for i, lv in enumerate(m["levels"]):
        row = {"macs": lv["macs"], "weight_bytes": lv["weight_bytes"],
               "arena_bytes": lv["arena_bytes"], "tflite_bytes": len(tfl[i])}
        for cpu, r in res.items():
            per = r[i]["run_instructions"] / len(ex)
            row[f"instructions_{cpu}"] = per
            row[f"instructions_per_mac_{cpu}"] = round(per / lv["macs"], 2)
            row[f"switch_instructions_{cpu}"] = r[i]["switch_instructions"]
        row["classes_match_host"] = res["m4"][i]["classes"] == host[i][:len(ex)].argmax(
            1).tolist()
        levels.append(row)
        print(json.dumps(row))
    stored = m["weight_bytes"] + m["table_bytes"]
    out = {"model": label, "levels": len(levels),
           "bit_exact_levels": int(sum(exact)),
           "flash_bytes": stored,
           "flash_ratio_vs_largest_level": round(stored / levels[-1]["weight_bytes"], 4),
           "flash_ratio_vs_largest_level_tflite": round(stored / levels[-1]["tflite_bytes"], 4),
           "flash_ratio_vs_sum_tflite": round(stored / sum(lv["tflite_bytes"] for lv in levels),
                                              4),
           # per-level BatchNorm statistics: the DS-CNN-S-shaped test program
           "flash_ratio_vs_largest_level_own_stats": round(
               (m_own["weight_bytes"] + m_own["table_bytes"]) / m_own["levels"][-1][
                   "weight_bytes"], 4),
           "arena_bytes": m["arena_bytes"], "tflm_arena_bytes_largest_level": int(tflm_arena),
           "ram_ratio_vs_tflm_arena": round(m["arena_bytes"] / tflm_arena, 4),
           "switch_bytes_moved": 0,
           "switch_instructions_m4": levels[-1]["switch_instructions_m4"],
           "instructions_per_mac_m4": levels[-1]["instructions_per_mac_m4"],
           "instructions_per_mac_m0plus": levels[-1]["instructions_per_mac_m0plus"],
           "float32_instructions_per_mac": float_ipm or None,
           "quick": args.quick, "machine": "shared 2-core host, QEMU 7.2 -icount shift=0"}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
