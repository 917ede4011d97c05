"""Safe binary storage for nested dicts of arrays and a small JSON metadata dict. Never pickle.

Variables here are plain nested dicts with ``str`` keys whose leaves are arrays (numpy, JAX, or
anything ``numpy.asarray`` accepts) of a numeric dtype from :data:`SUPPORTED_DTYPES`. Loading
parses only lengths, JSON and raw numbers: no code runs, and every size is checked against
``max_bytes`` before anything of that size is allocated, so a hostile file costs at most
``max_bytes`` of memory and raises :class:`FormatError` instead of crashing.

File format, version 1 (all integers little-endian)::

    offset  size  field
    0       8     magic b"\\x89SUBNET\\n"   (\\x89 and \\n catch 7-bit and text-mode transfers)
    8       2     version, uint16 = 1
    10      2     flags, uint16: bit 0 = payload is a zlib stream (RFC 1950, DEFLATE inside);
                  all other bits must be 0
    12      4     H = header length, uint32
    16      8     S = stored payload length, uint64
    24      8     R = inflated payload length, uint64 (R == S when not compressed)
    32      H     header: UTF-8 JSON object, right-padded with spaces to a multiple of 16 bytes
    32+H    S     payload (raw, or zlib-compressed raw bytes)
    32+H+S  4     CRC-32 (zlib.crc32) of every preceding byte, uint32

The header is ``{"arrays": [...], "empty": [...], "meta": {...}}``:

- ``arrays``: one entry per leaf, in the tree's insertion order:
  ``{"path": ["params", "conv0", "kernel"], "dtype": "float32", "shape": [3, 3, 1, 8],
  "offset": 0}``. Offsets index the raw (inflated) payload. Arrays are packed in order, each
  starting at the previous end rounded up to 16 bytes (padding bytes are zero), so an array's
  byte size is ``prod(shape) * itemsize`` and the payload ends exactly where the last array does.
  Data are C-ordered and little-endian; ``bool`` is one byte, 0 or 1; ``bfloat16`` is stored as
  its 16-bit pattern.
- ``empty``: the empty dicts of the tree, as ``{"path": [...], "at": k}``, meaning "created
  just before ``arrays[k]``" so key order survives a round trip. ``{"path": [], "at": 0}`` is an
  empty root.
- ``meta``: any JSON object (finite numbers only).

A reader rejects, with :class:`FormatError`: bad magic, unknown version or flags, lengths over
``max_bytes`` or inconsistent with the input length (truncated or trailing bytes), a CRC
mismatch, invalid UTF-8/JSON (including NaN/Infinity, duplicate keys, unknown fields), unknown
dtypes, shapes that are not lists of non-negative ints, sizes over ``max_bytes``, offsets that
are not the packed ones, paths that collide, and compressed payloads that inflate to anything
but exactly ``R`` bytes (inflation stops at ``R``, so a zip bomb allocates at most ``R``).

Example:
    >>> import numpy as np
    >>> from subnets import io
    >>> v = {"params": {"conv0": {"kernel": np.ones((3, 3, 1, 8), np.float32)}},
    ...      "batch_stats": {}}
    >>> data = io.dumps(v, meta={"accuracy": 0.91}, compress=True)
    >>> w, meta = io.loads(data)
    >>> w["params"]["conv0"]["kernel"].shape, w["batch_stats"], meta
    ((3, 3, 1, 8), {}, {'accuracy': 0.91})

References:
    DNNShifter (Eccles et al., 2023) keeps inactive model variants DEFLATE-compressed; this is the
    storage layer its portfolio (:mod:`subnets.runtime.portfolio`) is built on.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np

from subnets import _finite, _io_format
from subnets._io_format import (
    _DTYPES,
    SUPPORTED_DTYPES,
    ArraySpec,
    FormatError,
    Header,
    Path,
    Variables,
)

# Unused here; kept so that code reading the layout constants from subnets.io keeps working.
from subnets._io_format import ALIGN as ALIGN
from subnets._io_format import MAGIC as MAGIC
from subnets._io_format import MAX_NDIM as MAX_NDIM
from subnets._io_format import VERSION as VERSION

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED_DTYPES",
    "ArraySpec",
    "FormatError",
    "Header",
    "atomic_write",
    "read_json",
    "write_json",
    "dumps",
    "load",
    "loads",
    "peek",
    "save",
]

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: far above any model we ship, far below a machine's RAM.

# Defined next to the decoder, which needs them, but public here: tracebacks, reprs, pickles and
# docs should name subnets.io.FormatError, not the private module.
for _cls in (ArraySpec, FormatError, Header):
    _cls.__module__ = __name__
del _cls


# --------------------------------------------------------------------------------------------
# Writing.


def _as_array(path: Path, leaf: Any) -> np.ndarray:
    if leaf is None or isinstance(leaf, str | bytes | bytearray):
        raise TypeError(f"leaf at {path} is {type(leaf).__name__}, not an array")
    try:
        arr = np.asarray(leaf)
    except Exception as e:  # noqa: BLE001 - any conversion failure means "not an array"
        raise TypeError(f"leaf at {path} is not convertible to an array: {e}") from e
    if arr.dtype.name not in _DTYPES or arr.dtype.fields is not None:
        raise TypeError(
            f"leaf at {path} has unsupported dtype {arr.dtype}; supported: "
            + ", ".join(SUPPORTED_DTYPES)
        )
    return arr


def _flatten(
    tree: Mapping[str, Any],
) -> tuple[list[tuple[Path, np.ndarray]], list[tuple[Path, int]]]:
    if not isinstance(tree, Mapping):
        raise TypeError(f"variables must be a dict, got {type(tree).__name__}")
    leaves: list[tuple[Path, np.ndarray]] = []
    empties: list[tuple[Path, int]] = []
    # An explicit stack instead of recursion, in reverse so keys come out in insertion order.
    stack: list[tuple[Path, Any]] = [((), tree)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, Mapping):
            if not node:
                empties.append((path, len(leaves)))
            for key in reversed(list(node)):
                if not isinstance(key, str):
                    raise TypeError(f"key {key!r} under {path} is not a str")
                stack.append(((*path, key), node[key]))
        else:
            leaves.append((path, _as_array(path, node)))
    return leaves, empties


def dumps(
    variables: Mapping[str, Any],
    *,
    meta: Mapping[str, Any] | None = None,
    compress: bool = False,
    level: int = 6,
) -> bytes:
    """Serialises a nested dict of arrays and a JSON metadata dict to bytes.

    Args:
        variables: nested dict with ``str`` keys and array leaves of a supported dtype.
            Empty dicts are kept. JAX arrays are copied to the host.
        meta: JSON-serialisable dict (numpy/JAX scalars are converted; NaN and inf are not
            allowed).
        compress: DEFLATE the payload (zlib stream). Worth it for sparse or pruned weights.
        level: zlib compression level 0-9 when ``compress``.

    Returns:
        The encoded file contents (see the module docstring for the layout).

    Raises:
        TypeError: a key is not a ``str``, a leaf is not an array of a supported dtype, or
            ``meta`` is not JSON-serialisable.
        ValueError: ``meta`` holds NaN or infinity, or ``level`` is out of range.

    Example:
        >>> import numpy as np
        >>> from subnets import io
        >>> data = io.dumps({"w": np.zeros(1000, np.float32)}, compress=True)
        >>> len(data) < 1000 * 4
        True

    References:
        DNNShifter (Eccles et al., 2023): DEFLATE-compressed model variants.
    """
    if compress and (type(level) is not int or not 0 <= level <= 9):
        raise ValueError(f"level must be an int in 0..9, got {level!r}")
    leaves, empties = _flatten(variables)
    meta = {} if meta is None else meta
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")

    return _io_format.encode(leaves, empties, dict(meta), compress=compress, level=level)


def _fsync_dir(folder: str) -> None:
    # Makes the rename itself durable; not possible (nor needed) on every platform.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> None:
    """Replaces ``path`` by ``data`` all at once: temp file in the same folder, fsync, rename.

    An error at any point leaves the old file (or no file) and removes the temporary one. A
    replaced file keeps its permission bits; a new one gets ``0o666`` minus the umask.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        try:
            # os.open (not mkstemp) so a new file gets 0o666 minus the umask, like open() would.
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        try:
            if mode is not None:
                os.chmod(tmp, mode)  # replacing a file keeps its permissions
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def save(
    path: str | os.PathLike[str],
    variables: Mapping[str, Any],
    *,
    meta: Mapping[str, Any] | None = None,
    compress: bool = False,
    level: int = 6,
    allow_nonfinite: bool = False,
) -> None:
    """Writes :func:`dumps` output to ``path`` atomically.

    The bytes go to a temporary file in the same folder, are fsynced, then renamed over
    ``path`` (``os.replace``). Any error (an unsupported dtype, a full disk, an interrupt) leaves
    either the old file or no file, never a half-written one; the temporary file is removed.

    Args:
        path: destination file.
        variables: see :func:`dumps`.
        meta: see :func:`dumps`.
        compress: see :func:`dumps`.
        level: see :func:`dumps`.
        allow_nonfinite: write float arrays holding NaN/inf; by default they raise
            ``ValueError`` naming the array (nothing non-finite is saved by accident).

    Example:
        >>> import os, tempfile, numpy as np
        >>> from subnets import io
        >>> path = os.path.join(tempfile.mkdtemp(), "v.subnets")
        >>> io.save(path, {"w": np.arange(3, dtype=np.int8)}, meta={"step": 7})
        >>> io.load(path)
        ({'w': array([0, 1, 2], dtype=int8)}, {'step': 7})

    References:
        DNNShifter (Eccles et al., 2023).
    """
    # Encode first: a bad leaf must fail before the disk is touched.
    if not allow_nonfinite:
        for leaf_path, arr in _flatten(variables)[0]:
            _finite.check_array(arr, f"{os.fspath(path)}: array {'/'.join(leaf_path)}")
    atomic_write(path, dumps(variables, meta=meta, compress=compress, level=level))


def peek(data: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Header:
    """Validates everything but the array values and returns the header, without inflating.

    Lengths, the CRC and the header are checked exactly as :func:`loads` checks them; only the
    DEFLATE stream and the bytes of ``bool`` arrays are left for :func:`loads`.

    Args:
        data: encoded file contents.
        max_bytes: bound on the input size and on the inflated payload size.

    Returns:
        The :class:`Header`; ``inflated_nbytes`` is what :func:`loads` would allocate.

    Raises:
        FormatError: the input is truncated, corrupt, or over ``max_bytes``.

    Example:
        >>> import numpy as np
        >>> from subnets import io
        >>> h = io.peek(io.dumps({"w": np.zeros((4, 4), np.float16)}, compress=True))
        >>> h.arrays[0].path, h.arrays[0].shape, h.inflated_nbytes
        (('w',), (4, 4), 32)

    References:
        DNNShifter (Eccles et al., 2023).
    """
    return _io_format.read_header(data, max_bytes)


def loads(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    copy: bool = True,
) -> tuple[Variables, dict[str, Any]]:
    """Decodes :func:`dumps` output.

    Args:
        data: encoded file contents.
        max_bytes: bound on the input size and on the inflated payload size; larger inputs are
            rejected before anything of that size is allocated.
        copy: if True, every array owns its (writable) memory. If False, arrays are read-only
            views into one buffer (the inflated payload, or ``data`` itself when uncompressed):
            no second copy, which makes switching variants cheaper.

    Returns:
        ``(variables, meta)``: numpy arrays with the stored dtypes (native byte order) and
        shapes, in the stored nesting and key order.

    Raises:
        FormatError: the input is truncated, corrupt, forged, or over ``max_bytes``.

    Example:
        >>> import numpy as np
        >>> from subnets import io
        >>> io.loads(io.dumps({"a": {"b": np.array([True, False])}, "c": {}}))
        ({'a': {'b': array([ True, False])}, 'c': {}}, {})

    References:
        DNNShifter (Eccles et al., 2023).
    """
    return _io_format.decode(data, max_bytes, copy=copy)


def load(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    copy: bool = True,
) -> tuple[Variables, dict[str, Any]]:
    """Reads a file written by :func:`save`.

    Args:
        path: file to read.
        max_bytes: bound on the file size and on the inflated payload size; a larger file is
            rejected from its size alone, before it is read.
        copy: see :func:`loads`.

    Returns:
        ``(variables, meta)`` as :func:`loads`.

    Raises:
        FormatError: the file is truncated, corrupt, forged, or too big; the message starts with
            the file name.
        OSError: the file cannot be read.

    Example:
        >>> import os, tempfile, numpy as np
        >>> from subnets import io
        >>> path = os.path.join(tempfile.mkdtemp(), "v.subnets")
        >>> io.save(path, {"w": np.ones(2, np.float32)}, compress=True)
        >>> io.load(path)[0]["w"]
        array([1., 1.], dtype=float32)

    References:
        DNNShifter (Eccles et al., 2023).
    """
    data = _read_bounded(path, max_bytes)
    try:
        return loads(data, max_bytes=max_bytes, copy=copy)
    except FormatError as e:
        raise FormatError(f"{os.fspath(path)}: {e}") from None


_CHUNK = 1 << 20


def _read_bounded(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The file's bytes, read in chunks: memory follows the real size, never ``max_bytes``."""
    _io_format.check_max_bytes(max_bytes)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise FormatError(f"{os.fspath(path)}: {size} bytes, over max_bytes={max_bytes}")
        chunks = []
        total = 0
        # Each read asks for what fstat promised (+1 to notice growth), at most one chunk.
        while chunk := f.read(min(_CHUNK, max_bytes + 1 - total, max(size - total, 0) + 1)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # the file grew since fstat
                raise FormatError(f"{os.fspath(path)}: file is over max_bytes={max_bytes}")
    return b"".join(chunks)


# --------------------------------------------------------------------------------------------
# JSON side files (metrics, reports, manifests): strict and atomic, through one helper.


def _strict(obj: Any, nonfinite: str, where: str) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _strict(v, nonfinite, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict(v, nonfinite, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic) or (hasattr(obj, "__array__") and np.ndim(obj) == 0):
        obj = np.asarray(obj).item()
    if isinstance(obj, float) and not math.isfinite(obj):
        if nonfinite == "null":
            return None
        raise ValueError(f"{where} is {obj}: JSON files hold finite numbers only")
    return obj


def write_json(path: str | os.PathLike[str], obj: Any, *, nonfinite: str = "error",
               indent: int | None = 1) -> None:
    """Write ``obj`` as strict JSON to ``path`` atomically (temp file, fsync, rename).

    The rule for NaN and infinity: ``nonfinite="error"`` (default) raises ``ValueError`` naming
    the key path before the disk is touched; ``"null"`` writes them as ``null`` (used for
    metrics, where "no value" is the honest record of a non-finite one). NumPy/JAX scalars
    become Python numbers; the output never holds ``NaN``/``Infinity``.

    Example:
        >>> import os, tempfile
        >>> from subnets import io
        >>> p = os.path.join(tempfile.mkdtemp(), "m.json")
        >>> io.write_json(p, {"acc": 0.5, "loss": float("inf")}, nonfinite="null")
        >>> io.read_json(p)
        {'acc': 0.5, 'loss': None}

    References:
        RFC 8259 (JSON has no NaN or infinity).
    """
    if nonfinite not in ("error", "null"):
        raise ValueError(f"nonfinite must be 'error' or 'null', got {nonfinite!r}")
    clean = _strict(obj, nonfinite, "$")
    text = json.dumps(clean, indent=indent, allow_nan=False) + "\n"
    atomic_write(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike[str], *, max_bytes: int = 64 << 20) -> Any:
    """Read a JSON file strictly; a damaged one raises ``FormatError`` naming the file."""
    data = _read_bounded(path, max_bytes)
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FormatError(f"{os.fspath(path)}: not valid JSON ({e})") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard constant {name}")
