"""Host-memory policy for XLA:CPU: keep freed buffers mapped instead of unmapping them.

Where XLA:CPU lost most of its time on the zoo's convolutions was not a kernel. Every
execution allocates its outputs, temporaries and Eigen's convolution packing buffers afresh;
glibc serves each large allocation with a new ``mmap`` (above its mmap threshold, and in a
worker thread's arena anything above that arena's 64 MiB heap) and gives it back with
``munmap`` when the buffer dies, so every step page-faults and zero-fills the same memory
again. cPreResNet20 at batch 128 moves 33.5 MB activations; a lone 1x1 convolution producing
one ran at 15 GFLOP/s instead of 75.

:func:`keep_freed_memory` sets glibc's ``mallopt`` so that large allocations come from the
heap, freed memory stays mapped for the next step, and every thread allocates from that one
heap (``M_ARENA_MAX`` = 1, which covers XLA's worker threads when set before JAX creates
them). The process then holds on to its peak memory, which a training or inference loop
reaches every step anyway. The one heap has a cost where compilation dominates: XLA's
compiler threads then contend for it (a test suite of thousands of tiny programs ran 1.3x
slower, which is why ``tests/conftest.py`` opts out); one arena per thread without the rest
lost most of the run-time gain, so the policy keeps both.

``import subnets`` applies it (:func:`apply_default`), which in the usual order of imports is
before JAX starts its threads. ``SUBNETS_KEEP_FREED_MEMORY=0`` in the environment opts out;
``keep_freed_memory(False)`` restores glibc's thresholds (threads sharing the main arena keep
sharing it). Where the C library has no ``mallopt`` (macOS, musl) nothing changes and the
functions return ``False``. Measured side by side in one process by
``benchmarks/train_speed.py`` (``host_memory``); figures in ``docs/results.md``.

Example:
    >>> from subnets import cpu
    >>> was = cpu.freed_memory_kept()
    >>> cpu.keep_freed_memory(False)        # glibc's defaults again
    False
    >>> cpu.keep_freed_memory(was) == was   # and back
    True

References:
    glibc manual, "Malloc Tunable Parameters" (``mallopt``: ``M_MMAP_MAX``,
    ``M_TRIM_THRESHOLD``, ``M_TOP_PAD``, ``M_ARENA_MAX``); glibc ``malloc/arena.c``
    (non-main arenas fall back to ``mmap`` above their heap size).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# glibc's mallopt parameter numbers (malloc.h) and its documented defaults.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
_DEFAULTS = {_M_MMAP_MAX: 65536, _M_TRIM_THRESHOLD: 128 * 1024, _M_TOP_PAD: 128 * 1024}
# -1 is SIZE_MAX to glibc (the int is converted to size_t): never trim.
_KEPT = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: -1, _M_TOP_PAD: 64 << 20, _M_ARENA_MAX: 1}
ENV = "SUBNETS_KEEP_FREED_MEMORY"

_state = {"kept": False, "explicit": False, "libc": None}


def _libc():
    if _state["libc"] is None:
        lib = None
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            lib.mallopt.restype = ctypes.c_int
        except (OSError, AttributeError):
            lib = False
        _state["libc"] = lib
    return _state["libc"]


def keep_freed_memory(enable: bool = True) -> bool:
    """Keep freed host memory mapped for reuse (``enable``), or restore glibc's defaults.

    Returns whether the policy is now in force (``False`` where the C library has no
    ``mallopt``). An explicit call wins over :func:`apply_default` for the rest of the process.
    """
    _state["explicit"] = True
    return _set(bool(enable))


def _set(enable: bool) -> bool:
    lib = _libc()
    if not lib:
        _state["kept"] = False
        return False
    values = _KEPT if enable else _DEFAULTS
    ok = all(lib.mallopt(param, value) == 1 for param, value in values.items())
    if not enable and hasattr(lib, "malloc_trim"):
        lib.malloc_trim(0)  # hand what was kept back to the system
    _state["kept"] = enable and ok
    return _state["kept"]


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory`'s policy is in force in this process."""
    return _state["kept"]


def apply_default() -> bool:
    """The library's default, applied once (``import subnets`` does): keep freed memory,
    unless the environment says ``SUBNETS_KEEP_FREED_MEMORY=0`` or :func:`keep_freed_memory`
    was called. Applied before JAX starts its CPU threads, every thread shares the heap that
    keeps freed pages; threads that already exist keep their own arenas, whose requests above
    64 MiB glibc still maps afresh (half the gain, measured in ``benchmarks/train_speed.py``).
    """
    if _state["explicit"] or _state["kept"]:
        return _state["kept"]
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return _set(True)


# ``import subnets`` imports this module first, so the policy is in force before JAX creates
# its CPU thread pools (the usual order: the backend starts at the first computation).
apply_default()
