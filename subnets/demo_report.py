"""The demo's outputs: one accuracy-vs-MACs plot of every method, ``report.md``, and the host
build and run of the nested C artifact.

Example:
    >>> from subnets.demo_report import method_points
    >>> pts = method_points({"reds": {"levels": [{"macs": 10, "accuracy": 0.5}]}})
    >>> pts["REDS family"]
    [(10, 0.5)]

References:
    Corti et al., REDS (arXiv:2311.13349), Fig. 4 (accuracy against MACs per level).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from subnets._plot import INSTALL

LABELS = {"reds": "REDS family", "lcs": "LCS point (any width)", "imp": "IMP + removal",
          "reconvene": "Reconvene"}


def method_points(metrics: Mapping) -> dict[str, list[tuple[int, float]]]:
    """``{label: [(macs, accuracy), ...]}`` for every method present in ``metrics``."""
    out = {}
    for key, label in LABELS.items():
        if key in metrics:
            out[label] = [(int(lv["macs"]), float(lv["accuracy"]))
                          for lv in metrics[key]["levels"]]
    return out


def plot(metrics: Mapping, path: str | os.PathLike) -> str | None:
    """Every method's accuracy against true MACs on one figure, the base model as a star.

    The PNG is a side product of the demo: without matplotlib (the ``plot`` extra) it is
    skipped with one line saying so, and None is returned instead of the path.
    """
    from subnets._plot import side_plot

    return side_plot(_draw, path, metrics)


def _draw(path: str | os.PathLike, metrics: Mapping) -> None:
    from subnets._plot import figure

    cfg = metrics["config"]
    with figure(path, xlabel="true MACs per example (millions)", ylabel="test accuracy (%)",
                title=f"{cfg['model']} on {cfg['data']}", figsize=(6.5, 4.2)) as ax:
        for (label, pts), marker in zip(method_points(metrics).items(), "osd^", strict=False):
            pts = sorted(pts)
            ax.plot([m / 1e6 for m, _ in pts], [100 * a for _, a in pts], marker + "-",
                    label=label, alpha=0.85)
        if "base" in metrics:
            b = metrics["base"]
            ax.plot([b["macs"] / 1e6], [100 * b["accuracy"]], "k*", markersize=12,
                    label="base model")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _schedules(cfg: Mapping) -> str:
    """One line naming every step's training budget, so the table's accuracies can be read."""
    get = cfg.get
    adam = f" (Adam, peak {get('lr')})" if "lr" in cfg else ""
    lcs = (f"LCS {get('lcs_epochs')} (Adam, peak {get('lcs_lr')}, "
           f"warm-up epochs {get('lcs_warmup_epochs', 0)})" if "lcs_lr" in cfg
           else f"LCS {get('lcs_epochs')}")
    return (f"Epochs: base {get('epochs')}{adam}, REDS joint fine-tuning "
            f"{get('finetune_epochs')} (Adam, the trainers' default peak 1e-3), {lcs}, IMP "
            f"{get('imp_epochs')} per level for {get('imp_levels')} levels after the dense one "
            f"and Reconvene {get('imp_epochs')}{adam}; batch {get('batch_size')}, cosine decay "
            "everywhere.")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def write_report(metrics: Mapping, out: Path) -> Path:
    """``out/report.md``: what ran, the tables, the plot and the commands to reproduce it."""
    cfg, sec = metrics["config"], metrics["seconds"]
    quick = " --quick" if cfg.get("quick") else ""
    parts = [f"# subnets demo: {cfg['model']} on {cfg['data']}", "",
             f"Total {sec['total']:.0f} s on this machine. Reproduce with "
             f"`subnets demo{quick} --out {out}` (finished steps are reused; `--force` redoes "
             "them).", ""]
    if (out / "accuracy_vs_macs.png").exists():
        parts += ["![accuracy vs MACs](accuracy_vs_macs.png)", ""]
    else:
        parts += [f"(No plot: matplotlib is not installed; `{INSTALL}` adds it.)", ""]
    b = metrics["base"]
    parts += ["## Base model", "", f"{b['train_examples']} training / {b['test_examples']} test "
              f"examples; test accuracy {_pct(b['accuracy'])}, {b['macs']:,} MACs, "
              f"{b['params']:,} parameters ({sec.get('base', 0):.0f} s).", "",
              _schedules(cfg), ""]
    r = metrics["reds"]
    parts += ["## REDS: a nested family (one weight set, every level a prefix)", "",
              _table(["level", "budget", "MACs", "of full", "params", "accuracy",
                      "before fine-tuning"],
                     [[lv["level"], lv.get("budget", 1.0), f"{lv['macs']:,}",
                       _pct(lv["macs_fraction"]), f"{lv['params']:,}", _pct(lv["accuracy"]),
                       _pct(lv["accuracy_before_finetune"])] for lv in r["levels"]]), "",
              f"Family in memory {r['family']['memory_bytes']:,} B vs "
              f"{r['family']['separate_bytes']:,} B as separate models; one switch takes "
              f"{1e6 * r['switch_seconds']:.1f} us (median of 200). "
              f"`subnets nest --model {cfg['model']} --data {cfg['data']}`", ""]
    lc = metrics["lcs"]
    lo, hi = lc["trained_range"]
    parts += ["## LCS: a point subspace, evaluated at widths chosen after training", "",
              _table(["width", "MACs", "of full", "accuracy"],
                     [[lv["width"], f"{lv['macs']:,}", _pct(lv["macs_fraction"]),
                       _pct(lv["accuracy"])] for lv in lc["levels"]]), "",
              f"Trained on widths drawn from [{lo}, {hi}]; no norm recalibration. "
              f"`subnets subspace --model {cfg['model']} --data {cfg['data']} "
              "--compression structured --kind point`", ""]
    for key, title, cmd in (("imp", "DNNShifter: IMP with rewinding, dead structure removed",
                             "--method imp"),
                            ("reconvene", "Reconvene: pruned at initialisation, resilient "
                             "layers made small", "--method reconvene")):
        rows = [[lv["name"], _pct(lv["density"]), f"{lv['params_nonzero']:,}",
                 f"{lv['params_after']:,}", f"{lv['macs']:,}", _pct(lv["accuracy"]),
                 "yes" if lv["removal_exact"] else "NO"] for lv in metrics[key]["levels"]]
        parts += [f"## {title}", "", _table(["model", "density", "non-zero params",
                                             "params after removal", "MACs", "accuracy",
                                             "removal exact"], rows), "",
                  f"`subnets prune {cmd} --model {cfg['model']} --data {cfg['data']}`", ""]
    t = metrics["tflite"]
    parts += [f"## int8 TFLite per level, checked in the TFLite-Micro interpreter "
              f"({t['board']})", "",
              _table(["level", "flash B", "arena B", "fits", "TFLM accuracy",
                      "agreement with JAX"],
                     [[i, f"{e['flash_bytes']:,}", f"{e['arena_bytes']:,}",
                       "yes" if e["fits"] else "no", _pct(e.get("accuracy_tflm", float("nan"))),
                       _pct(e.get("agreement", float("nan")))]
                      for i, e in enumerate(t["levels"])]), "",
              "Problems: " + ("; ".join(t["problems"]) or "none") + ".", "",
              f"`subnets export {out} --formats tflite --board {cfg['board']}`", ""]
    n = metrics["nested_c"]
    parts += ["## One nested C artifact (levels share their weights)", ""]
    if n.get("built"):
        parts += [f"int8, TFLite-Micro's quantisation; built with `{n['compiler']}` and run "
                  f"on {n['examples']} test examples at every level: its classes agree with "
                  f"the float JAX family on {_pct(n['class_agreement'])} (per level "
                  + ", ".join(_pct(a) for a in n["class_agreement_levels"]) + "). "
                  f"Weights {n['weight_bytes']:,} B + tables {n['table_bytes']:,} B, stored "
                  f"once for all {n['levels']} levels; static arena {n['arena_bytes']:,} B. "
                  "A level switch writes widths only (no weight moves).", ""]
    else:
        parts += [f"Not built: {n.get('reason', 'no host compiler')}.", ""]
    parts += ["## Time per step", "",
              _table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in sec.items()]), ""]
    path = out / "report.md"
    tmp = out / ".report.md.tmp"
    tmp.write_text("\n".join(parts))
    os.replace(tmp, path)
    return path


def build_and_run_nested_c(family: Any, out: Path, x: np.ndarray, representative: np.ndarray,
                           *, name: str = "demo_model") -> dict:
    """Export ``family`` as one int8 nested C artifact, build it with the host compiler, run
    every level on ``x`` and compare its classes with the family's float outputs.

    Bit-exactness with TFLite-Micro is what the test suite proves (``tests/test_mcu_*.py``);
    here the demo shows the artifact builds, runs and agrees with JAX on real inputs.
    """
    from subnets.export import nested_c
    from subnets.export.kernels_dir import mcu_dir

    info = nested_c(family, out, representative=representative, name=name)
    result = {"weight_bytes": info["weight_bytes"], "table_bytes": info["table_bytes"],
              "arena_bytes": info["arena_bytes"], "levels": len(family), "built": False,
              "level_macs": [lv["macs"] for lv in info["levels"]]}
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return {**result, "reason": "no host C compiler (gcc/cc) on PATH"}
    exe = out / "run_levels"
    up = name.upper()
    proc = subprocess.run([cc, "-std=c99", "-O2", f"-I{out}", f'-DMODEL_H="{name}.h"',
                           f"-DPREFIX={name}", f"-DNUM_LEVELS={len(family)}",
                           f"-DOUTPUT_SIZE={up}_OUTPUT_SIZE", str(out / f"{name}.c"),
                           str(out / "snq.c"), str(mcu_dir() / "tests" / "run_levels.c"),
                           "-o", str(exe)], capture_output=True, text=True, check=False,
                          timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{cc} failed on {out}: {proc.stderr[-2000:]}")
    s, zp = info["input"]["scale"], info["input"]["zero_point"]
    xq = np.clip(np.round(x / s) + zp, -128, 127).astype(np.int8).reshape(len(x), -1)
    text = f"{len(xq)} {xq.shape[1]}\n" + " ".join(map(str, xq.ravel())) + "\n"
    proc = subprocess.run([str(exe)], input=text, capture_output=True, text=True, check=False,
                          timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{exe} exited with {proc.returncode}: {proc.stderr[-2000:]}")
    rows = [[int(v) for v in ln.split()] for ln in proc.stdout.splitlines() if ln.strip()]
    got = np.array(rows).reshape(len(family), len(x), -1)
    expect = np.stack([np.asarray(family.apply(x, i)) for i in range(len(family))])
    agree = [float(np.mean(got[i].argmax(-1) == expect[i].argmax(-1)))
             for i in range(len(family))]
    return {**result, "built": True, "compiler": os.path.basename(cc), "examples": len(x),
            "class_agreement": float(np.mean(agree)), "class_agreement_levels": agree}
