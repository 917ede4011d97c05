"""subnets.cpu: freed host memory stays mapped, so repeated XLA:CPU runs stop page-faulting.

Faults are counted with ``getrusage`` (minor faults: a page mapped and zero-filled on first
touch), which is exact and load independent, unlike a timing.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import subprocess
import sys

import pytest

from subnets import cpu

pytestmark = pytest.mark.skipif(not cpu._libc() or not sys.platform.startswith("linux"),
                                reason="the policy is glibc's mallopt (Linux)")

MB = 1 << 20
PAGES = 96 * MB // 4096


def _faults(who=resource.RUSAGE_SELF) -> int:
    return resource.getrusage(who).ru_minflt


def _touch_rounds(rounds: int = 3, who=resource.RUSAGE_SELF) -> list[int]:
    """Faults of malloc-ing, filling and freeing a 96 MiB buffer, per round (through the C
    library directly: numpy asks for transparent huge pages, which would hide the count)."""
    libc = cpu._libc()
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    out = []
    for _ in range(rounds):
        f0 = _faults(who)
        p = libc.malloc(96 * MB)
        assert p
        ctypes.memset(p, 1, 96 * MB)
        libc.free(p)
        out.append(_faults(who) - f0)
    return out


@pytest.fixture
def restore_policy():
    was = cpu.freed_memory_kept()
    yield
    cpu.keep_freed_memory(was)


def test_import_applies_the_policy_and_the_environment_opts_out():
    code = "import subnets; print(subnets.cpu.freed_memory_kept())"
    env = {k: v for k, v in os.environ.items() if k != cpu.ENV}
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                        timeout=300)
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**env, cpu.ENV: "0"}, timeout=300)
    assert on.stdout.split()[-1] == "True", on.stderr[-2000:]
    assert off.stdout.split()[-1] == "False", off.stderr[-2000:]


def test_freed_memory_is_reused_without_faults(restore_policy):
    assert cpu.keep_freed_memory(True) is True
    kept = _touch_rounds()
    assert cpu.keep_freed_memory(False) is False
    default = _touch_rounds()
    # glibc's defaults map a 96 MiB buffer afresh every time: every page faults again.
    assert min(default) > PAGES // 2, default
    # Kept: the first round may grow the heap; later rounds touch pages already mapped.
    assert max(kept[1:]) < PAGES // 20, kept


_FRESH = r"""
import json, resource, sys, threading
import subnets  # applies the policy before JAX starts its threads
import jax, jax.numpy as jnp
from subnets import cpu

sys.path.insert(0, TESTS)
from test_cpu import _touch_rounds as rounds

thread = {}
t = threading.Thread(target=lambda: thread.update(f=rounds(3, resource.RUSAGE_THREAD)))
t.start(); t.join()

x = jnp.ones((64, 64, 64, 32), jnp.float32)
k = jnp.ones((3, 3, 32, 32), jnp.float32) / 288
f = jax.jit(lambda x, k: jnp.tanh(jax.lax.conv_general_dilated(
    x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))) * 2 + x)

def per_run(enable):
    cpu.keep_freed_memory(enable)
    for _ in range(2):
        jax.block_until_ready(f(x, k))
    counts = []
    for _ in range(3):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        jax.block_until_ready(f(x, k))
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return min(counts)

print(json.dumps({"kept_at_import": cpu.freed_memory_kept(), "thread": thread["f"],
                  "xla_default": per_run(False), "xla_kept": per_run(True),
                  "out_pages": x.size * 4 // 4096}))
"""


@pytest.fixture(scope="module")
def fresh():
    """The policy as a user meets it: a new process that imports subnets first."""
    env = {k: v for k, v in os.environ.items() if k != cpu.ENV}
    code = f"TESTS = {os.path.dirname(os.path.abspath(__file__))!r}\n" + _FRESH
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_new_thread_reuses_the_heap_too(fresh):
    """A worker thread's arena would map anything above 64 MiB afresh; with one arena the
    thread allocates from the heap that keeps freed pages."""
    assert fresh["kept_at_import"] is True
    assert max(fresh["thread"][1:]) < PAGES // 20, fresh


def test_repeated_xla_runs_stop_faulting(fresh):
    """A jitted program with a 32 MiB output and temporaries: under glibc's defaults every
    execution faults its buffers in again; with the policy the buffers are reused."""
    assert fresh["xla_default"] > fresh["out_pages"] // 2, fresh
    assert fresh["xla_kept"] < fresh["out_pages"] // 10, fresh


def test_apply_default_respects_an_explicit_choice(restore_policy, monkeypatch):
    cpu.keep_freed_memory(False)
    assert cpu.apply_default() is False  # the explicit call wins
    monkeypatch.setitem(cpu._state, "explicit", False)
    monkeypatch.setenv(cpu.ENV, "off")
    assert cpu.apply_default() is False
    monkeypatch.setenv(cpu.ENV, "1")
    assert cpu.apply_default() is True
