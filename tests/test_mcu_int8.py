"""The int8 nested C artifact: bit-exact with TFLite-Micro on every level, and nothing moves."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _mcu_models as mm  # noqa: E402

from subnets.export.errors import ExportError  # noqa: E402
from subnets.export.int8_tflite import level_tflite  # noqa: E402
from subnets.export.kernels_dir import mcu_dir  # noqa: E402
from subnets.export.nested import nested_c, prepare  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a host C compiler")
FLAGS = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O1",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


def _host_outputs(out: Path, xq: np.ndarray, levels: int) -> np.ndarray:
    exe = out / "run"
    subprocess.run(["gcc", *FLAGS, f"-I{out}", f"-I{mcu_dir()}", '-DMODEL_H="model.h"',
                    "-DPREFIX=model", f"-DNUM_LEVELS={levels}", "-DOUTPUT_SIZE=MODEL_OUTPUT_SIZE",
                    str(out / "model.c"), str(out / "snq.c"),
                    str(mcu_dir() / "tests" / "run_levels.c"), "-o", str(exe)], check=True)
    text = f"{len(xq)} {xq[0].size}\n" + " ".join(map(str, xq.ravel())) + "\n"
    res = subprocess.run([str(exe)], input=text, capture_output=True, text=True, check=True)
    rows = [[int(v) for v in ln.split()] for ln in res.stdout.splitlines() if ln.strip()]
    return np.array(rows).reshape(levels, len(xq), -1)


def _tflm(model: bytes, xq: np.ndarray) -> np.ndarray:
    from tflite_micro.python.tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(model, arena_size=1 << 18)
    outs = []
    for row in xq:
        it.set_input(row.reshape(it.get_input_details(0)["shape"]), 0)
        it.invoke()
        outs.append(np.array(it.get_output(0)).ravel())
    return np.stack(outs).astype(int)


@pytest.mark.parametrize("build", [mm.dscnn, mm.resnet])
@pytest.mark.parametrize("per_level_stats", [False, True])
def test_every_level_bit_exact_with_tflm(tmp_path, build, per_level_stats):
    fam = build(per_level_stats=per_level_stats)
    rep = np.random.default_rng(5).normal(0, 1, (12,) + fam.net.graph.input_shape)
    m = nested_c(fam, tmp_path, representative=rep, name="model")
    steps, qz = prepare(fam, rep)
    s, zp = m["input"]["scale"], m["input"]["zero_point"]
    xq = np.clip(np.round(rep / s) + zp, -128, 127).astype(np.int8)
    host = _host_outputs(tmp_path, xq, len(fam.levels))
    for i in range(len(fam.levels)):
        ref = _tflm(level_tflite(steps, qz["widths"][i], i), xq)
        assert ref.std() > 0  # the outputs vary: a real comparison
        np.testing.assert_array_equal(host[i], ref, err_msg=f"level {i}")


def test_weights_written_once_and_tables_shared(tmp_path):
    fam = mm.dscnn()
    rep = np.random.default_rng(0).normal(0, 1, (8,) + fam.net.graph.input_shape)
    m = nested_c(fam, tmp_path, representative=rep, name="model")
    full = {g.name: g.size for g in fam.net.graph.groups}
    kernels = sum(np.asarray(v["kernel"]).size for v in fam.variables["params"].values()
                  if "kernel" in v)
    assert m["weight_bytes"] == kernels  # int8, every kernel byte once
    channels = sum(full[k] for k in ("g0", "g0", "g1", "g1", "g2", "out"))
    assert m["table_bytes"] == 9 * channels  # same statistics: one table, levels are prefixes
    per_level = nested_c(fam.__class__(fam.net.graph, fam.variables, fam.levels,
                                       [fam.variables["batch_stats"]] * 4), tmp_path / "b",
                         representative=rep, name="model")
    assert per_level["table_bytes"] == m["table_bytes"]
    macs = [lv["macs"] for lv in m["levels"]]
    assert macs == sorted(macs) and macs[0] < macs[-1]


def test_set_level_moves_no_weight(tmp_path):
    fam = mm.dscnn()
    rep = np.random.default_rng(0).normal(0, 1, (4,) + fam.net.graph.input_shape)
    nested_c(fam, tmp_path, representative=rep, name="model")
    src = (tmp_path / "snq.c").read_text()
    body = src[src.index("int snq_set_level"):src.index("static inline int8_t clamp8")]
    assert "weight" not in body and "memcpy" not in body
    text = (tmp_path / "model.c").read_text()
    assert text.count("static const int8_t w") == 6  # one array per weighted layer


def test_select_and_errors(tmp_path):
    fam = mm.dscnn()
    rep = np.random.default_rng(0).normal(0, 1, (4,) + fam.net.graph.input_shape)
    m = nested_c(fam, tmp_path, representative=rep, name="model")
    main = tmp_path / "sel.c"
    budgets = [0, m["levels"][0]["macs"], m["levels"][2]["macs"] + 1, 10**9]
    main.write_text('#include <stdio.h>\n#include "model.h"\nint main(void){' + "".join(
        f'printf("%d\\n", subnets_select({b}UL));' for b in budgets) + "return 0;}\n")
    subprocess.run(["gcc", *FLAGS, f"-I{tmp_path}", str(main), str(tmp_path / "model.c"),
                    str(tmp_path / "snq.c"), "-o", str(tmp_path / "sel")], check=True)
    got = subprocess.run([str(tmp_path / "sel")], capture_output=True, text=True).stdout.split()
    assert got == ["-1", "0", "2", "3"]
    counts = [1111, 2222, 3333, 4444]
    nested_c(fam, tmp_path / "i", representative=rep, name="model", instructions=counts)
    assert "3333UL}" in (tmp_path / "i" / "model.c").read_text()
    with pytest.raises(ExportError, match="instructions"):
        nested_c(fam, tmp_path / "i", representative=rep, name="model", instructions=[1])
    with pytest.raises(ExportError, match="representative"):
        nested_c(fam, tmp_path)
    with pytest.raises(ExportError, match="input_shape"):
        nested_c(fam, tmp_path, representative=np.zeros((2, 3)))
    with pytest.raises(ExportError, match="C identifier"):
        nested_c(fam, tmp_path, representative=rep, name="1bad")


ARM_GCC = shutil.which("arm-none-eabi-gcc")
QEMU = shutil.which("qemu-system-arm")


@pytest.mark.skipif(ARM_GCC is None or QEMU is None, reason="needs arm-none-eabi-gcc and QEMU")
def test_firmware_cross_builds_and_m4_image_prints_host_classes(tmp_path):
    from subnets.export import firmware

    fam = mm.resnet()
    rep = np.random.default_rng(3).normal(0, 1, (4,) + fam.net.graph.input_shape)
    m = nested_c(fam, tmp_path, representative=rep, name="model")
    xq = np.clip(np.round(rep / m["input"]["scale"]) + m["input"]["zero_point"], -128,
                 127).astype(np.int8)
    host = _host_outputs(tmp_path, xq, len(fam.levels))
    m0 = firmware.build(tmp_path, xq, "m0plus")  # Armv6-M code: no DSP instructions
    assert m0.stat().st_size > 0
    got = firmware.run(firmware.build(tmp_path, xq, "m4"), "m4")
    assert [r["classes"] for r in got] == [host[i].argmax(1).tolist()
                                          for i in range(len(fam.levels))]
    assert all(r["run_instructions"] > r["switch_instructions"] for r in got)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_runtime_unit_checks_strict_and_sanitized(tmp_path):
    res = subprocess.run(["make", "-C", str(mcu_dir()), "test"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("ok") >= 2


@pytest.mark.skipif(ARM_GCC is None, reason="needs arm-none-eabi-gcc")
def test_board_firmware_cross_builds_for_nano33ble_and_pico(tmp_path):
    from subnets.export import firmware

    fam = mm.dscnn()
    rep = np.random.default_rng(0).normal(0, 1, (4,) + fam.net.graph.input_shape)
    m = nested_c(fam, tmp_path, representative=rep, name="model")
    for board in ("nano33ble", "pico"):
        built = firmware.build_board(tmp_path, board)
        assert built["elf"].stat().st_size > 0
        assert built["flash_bytes"] > m["weight_bytes"] + m["table_bytes"]
        assert built["ram_bytes"] >= m["arena_bytes"]


def test_cli_nested_c_writes_int8_for_a_program_and_checks_the_board(tmp_path, capsys):
    from subnets.cli.export import _nested_c
    from subnets.export import Board

    fam = mm.dscnn()
    rep = np.random.default_rng(0).normal(0, 1, (4,) + fam.net.graph.input_shape)
    assert _nested_c(fam, tmp_path / "a", Board("big", 1 << 20, 1 << 18), rep)
    text = capsys.readouterr().out
    assert "(int8)" in text and "margin" in text and (tmp_path / "a" / "snq.c").exists()
    assert not _nested_c(fam, tmp_path / "b", Board("tiny", 8 * 1024 + 100, 5 * 1024), rep)
    assert "DOES NOT FIT" in capsys.readouterr().out
