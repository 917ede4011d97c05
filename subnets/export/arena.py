"""Measure the tensor arena a model needs in TFLite-Micro, by bisection over real allocations.

TFLM's own ``RecordingMicroAllocator`` total is not the answer: kernels' ``Prepare`` allocate
temporaries that are freed again, so the smallest arena that works is larger than the recorded
total (measured: 5,408 B recorded, ~5,900 B needed for a small dense net). The only honest number
is the smallest size with which the interpreter really allocates and invokes the model.

Probing small sizes is unsafe in-process: the Python TFLM interpreter can crash (SIGSEGV) when an
allocation fails part-way through a kernel's Prepare. So probes run in a worker subprocess that is
restarted if it dies; a crash counts as "does not fit".

Example (needs ``subnets[export]``):
    >>> import jax, numpy as np, subnets
    >>> from subnets.export import tflite
    >>> from subnets.export.arena import measure
    >>> net = subnets.zoo.create("dnn-s", num_classes=4, input_shape=(8,))
    >>> x = np.random.default_rng(0).random((16, 8), dtype=np.float32)
    >>> model = tflite(net, net.init(jax.random.key(0)), representative=x)
    >>> 0 < measure(model) < 64 * 1024
    True

References:
    David et al., TensorFlow Lite Micro (MLSys 2021), Sec. 4.4 (the arena and its planner).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile

from subnets.export.errors import ArenaError, UnsupportedOpError

_WORKER = r"""
import os, re, sys, tempfile
import numpy as np
from tflite_micro.python.tflite_micro import runtime
model = open(sys.argv[1], "rb").read()
log = tempfile.TemporaryFile()
os.dup2(log.fileno(), 2)  # TFLM reports on fd 2; keep it to name a missing op
for line in sys.stdin:
    log.seek(0); log.truncate()
    try:
        it = runtime.Interpreter.from_bytes(model, arena_size=int(line))
        d = it.get_input_details(0)
        it.set_input(np.zeros(d["shape"], d["dtype"]), 0)
        it.invoke()
        answer = "1"
    except RuntimeError:
        log.seek(0)
        ops = re.findall(rb"Didn't find op for builtin opcode '([A-Z0-9_]+)'", log.read())
        answer = "op " + " ".join(o.decode() for o in ops) if ops else "0"
    sys.stdout.write(answer + "\n")
    sys.stdout.flush()
"""


class _Prober:
    """A worker process answering "does the model run in an arena of N bytes?"."""

    def __init__(self, path: str):
        self.path, self.proc = path, None
        self.log = tempfile.TemporaryFile(mode="w+")  # TFLM's own messages, for the error

    def _start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER, self.path],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)

    def tflm_log(self, limit: int = 600) -> str:
        """The last ``limit`` characters TFLite-Micro wrote to stderr."""
        self.log.flush()
        self.log.seek(0)
        text = self.log.read().strip()
        return text[-limit:] if text else "(nothing)"

    def __call__(self, size: int) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        try:
            self.proc.stdin.write(f"{int(size)}\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline().strip()
        except (BrokenPipeError, OSError):
            answer = ""
        if not answer:  # the worker crashed on this size: it does not fit
            self.close()
            return False
        if answer.startswith("op "):
            raise UnsupportedOpError(answer[3:].split())
        return answer == "1"

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.stdin.close()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None


_CACHE: dict[tuple[str, int], int] = {}


def measure(model: bytes, *, resolution: int = 16, limit: int = 1 << 30) -> int:
    """Smallest arena (bytes, a multiple of ``resolution``) that runs ``model``; cached."""
    key = (hashlib.sha256(model).hexdigest(), int(resolution))
    if key not in _CACHE:
        _CACHE[key] = _measure(bytes(model), int(resolution), int(limit))
    return _CACHE[key]


def _measure(model: bytes, resolution: int, limit: int) -> int:
    fd, path = tempfile.mkstemp(suffix=".tflite")
    prober = _Prober(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model)
        hi = 4 * len(model) + (64 << 10)
        while not prober(hi):
            if hi >= limit:
                raise ArenaError(f"TFLite-Micro cannot allocate or run this model even with a "
                                 f"{hi:,} B arena; TFLM's log: {prober.tflm_log()}")
            hi *= 2
        lo = 0  # invariant: prober(hi) succeeds, prober(lo) fails (monotone in the size)
        while hi - lo > resolution:
            mid = (lo + hi) // 2 // resolution * resolution or resolution
            if mid <= lo:
                break
            lo, hi = (lo, mid) if prober(mid) else (mid, hi)
        return -(-hi // resolution) * resolution
    finally:
        prober.close()
        prober.log.close()
        os.unlink(path)
