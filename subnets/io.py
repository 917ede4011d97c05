"""Safe binary storage for nested dicts of arrays and a small JSON metadata dict. Never pickle.

Variables here are plain nested dicts with ``str`` keys whose leaves are arrays (numpy, JAX, or
anything ``numpy.asarray`` accepts) of a numeric dtype from :data:`SUPPORTED_DTYPES`. Loading
parses only lengths, JSON and raw numbers: no code runs, and every size is checked against
``max_bytes`` before anything of that size is allocated, so a hostile file costs at most
``max_bytes`` of memory and raises :class:`FormatError` (naming the file) instead of crashing.

Two formats; readers tell them apart by their first bytes, writers choose with ``format=``:

- ``"safetensors"`` (the default): a standard safetensors file, readable from PyTorch, NumPy,
  JAX and Hugging Face tools. Tensors are named by their path, ``"params/conv1/kernel"``; the
  metadata (each key of ``meta``, JSON-encoded, plus the empty dicts and a CRC-32) lives in its
  ``__metadata__``; see :mod:`subnets._safetensors` for the exact layout and checks. With
  ``compress=True`` the file is a safetensors file holding one ``uint8`` tensor
  ``"deflated"``, the zlib stream of the uncompressed file. Any safetensors file loads (names
  split at ``/`` into nested dicts; ``meta`` is then its raw ``__metadata__``).
- ``"subnets-v1"``: the original format (magic ``b"\\x89SUBNET\\n"``, a JSON header, a raw
  or DEFLATE payload, a CRC-32), documented in :mod:`subnets._io_format`; still read and written.

Reading a file in PyTorch (or NumPy with ``safetensors.numpy``)::

    from safetensors.torch import load_file            # pip install safetensors
    weights = load_file("family.subnets")              # {"params/conv1/kernel": tensor, ...}
    # compressed files (compress=True, portfolio variants): inflate first
    import zlib; from safetensors import safe_open; from safetensors.torch import load
    with safe_open("model.subnets", "np") as f:
        weights = load(zlib.decompress(f.get_tensor("deflated").tobytes()))

Flax/JAX kernels keep their layout (e.g. HWIO convolutions); PyTorch's is OIHW.

Example:
    >>> import numpy as np
    >>> from subnets import io
    >>> v = {"params": {"conv0": {"kernel": np.ones((3, 3, 1, 8), np.float32)}},
    ...      "batch_stats": {}}
    >>> data = io.dumps(v, meta={"accuracy": 0.91})
    >>> w, meta = io.loads(data)
    >>> w["params"]["conv0"]["kernel"].shape, w["batch_stats"], meta
    ((3, 3, 1, 8), {}, {'accuracy': 0.91})
    >>> from safetensors.numpy import load
    >>> sorted(load(data)), io.format_of(data)
    (['params/conv0/kernel'], 'safetensors')

References:
    safetensors format specification (Hugging Face). DNNShifter (Eccles et al., 2023) keeps
    inactive model variants DEFLATE-compressed; this is the storage layer its portfolio
    (:mod:`subnets.runtime.portfolio`) is built on.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from subnets import _finite, _io_format, _safetensors
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
    "FORMATS",
    "format_of",
    "load",
    "loads",
    "peek",
    "save",
]

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: far above any model we ship, far below a machine's RAM.
FORMATS = ("safetensors", "subnets-v1")

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
    format: str = "safetensors",
) -> bytes:
    """Serialises a nested dict of arrays and a JSON metadata dict to bytes.

    Args:
        variables: nested dict with ``str`` keys and array leaves of a supported dtype.
            Empty dicts are kept. JAX arrays are copied to the host.
        meta: JSON-serialisable dict (numpy/JAX scalars are converted; NaN and inf are not
            allowed).
        compress: DEFLATE the payload (zlib stream). Worth it for sparse or pruned weights.
        level: zlib compression level 0-9 when ``compress``.
        format: ``"safetensors"`` or ``"subnets-v1"`` (see the module docstring).

    Returns:
        The encoded file contents (see the module docstring for the layout).

    Raises:
        TypeError: a key is not a ``str``, a leaf is not an array of a supported dtype, or
            ``meta`` is not JSON-serialisable.
        ValueError: ``meta`` holds NaN or infinity, ``level`` or ``format`` is unknown, or (in
            safetensors) a ``meta`` key starts with the reserved ``"subnets."``.

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
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    leaves, empties = _flatten(variables)
    meta = {} if meta is None else meta
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    if format == "subnets-v1":
        return _io_format.encode(leaves, empties, dict(meta), compress=compress, level=level)
    data = _safetensors.encode(leaves, empties, dict(meta))
    return _safetensors.encode_deflated(data, level) if compress else data


def format_of(data: bytes | bytearray | memoryview) -> str:
    """``"safetensors"`` or ``"subnets-v1"``: the format the first bytes of ``data`` announce.

    Raises:
        FormatError: neither (the message shows the first bytes).

    Example:
        >>> import numpy as np
        >>> from subnets import io
        >>> io.format_of(io.dumps({"w": np.ones(2)}, format="subnets-v1"))
        'subnets-v1'
    """
    view = memoryview(data).cast("B")
    head = bytes(view[: len(MAGIC)])
    if head == MAGIC[: len(head)]:
        return "subnets-v1"  # (a truncated magic is still called v1, for the clearer error)
    if _safetensors.is_safetensors(view[:9]):
        return "safetensors"
    if len(view) < 9:
        raise FormatError(f"not a subnets file (bad magic {head!r}; truncated: {len(view)} "
                          "bytes, too short for either format)")
    raise FormatError(f"not a subnets file (bad magic {head!r}: neither the subnets-v1 magic "
                      "nor a safetensors header)")


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
    format: str = "safetensors",
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
        format: ``"safetensors"`` (default) or ``"subnets-v1"``, see :func:`dumps`.

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
    atomic_write(path, dumps(variables, meta=meta, compress=compress, level=level,
                             format=format))


def peek(data: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Header:
    """Validates everything but the array values and returns the header, without inflating.

    Lengths, the CRC and the header are checked exactly as :func:`loads` checks them; only the
    DEFLATE stream and the bytes of ``bool`` arrays are left for :func:`loads`.

    Args:
        data: encoded file contents.
        max_bytes: bound on the input size and on the inflated payload size.

    Returns:
        The :class:`Header`; ``inflated_nbytes`` is what :func:`loads` would allocate (for a
        compressed safetensors file: the whole inflated file, header included).

    Raises:
        FormatError: the input is truncated, corrupt, or over ``max_bytes``.

    Example:
        >>> import numpy as np
        >>> from subnets import io
        >>> h = io.peek(io.dumps({"w": np.zeros((4, 4), np.float16)}, compress=True,
        ...                      format="subnets-v1"))
        >>> h.arrays[0].path, h.arrays[0].shape, h.inflated_nbytes
        (('w',), (4, 4), 32)
        >>> h = io.peek(io.dumps({"w": np.zeros((4, 4), np.float16)}, compress=True))
        >>> h.compressed, h.inflated_nbytes  # the whole inflated safetensors file
        (True, 224)

    References:
        DNNShifter (Eccles et al., 2023).
    """
    _io_format.check_max_bytes(max_bytes)
    if format_of(data) == "subnets-v1":
        return _io_format.read_header(data, max_bytes)
    return _safetensors.read_header(data, max_bytes)


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
    _io_format.check_max_bytes(max_bytes)
    if format_of(data) == "subnets-v1":
        return _io_format.decode(data, max_bytes, copy=copy)
    return _safetensors.decode(data, max_bytes, copy=copy)


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
    try:
        data = _read_bounded(path, max_bytes, _check_prefix)
        return loads(data, max_bytes=max_bytes, copy=copy)
    except FormatError as e:
        where = os.fspath(path)
        raise FormatError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None


def _check_prefix(prefix: bytes, size: int, max_bytes: int) -> None:
    """Before reading past the first bytes: a safetensors header length must fit the file."""
    if len(prefix) >= 9 and format_of(prefix) == "safetensors":
        (head_len,) = struct.unpack_from("<Q", prefix)
        _safetensors.check_header_length(head_len, size, max_bytes)


_CHUNK = 1 << 20


def _read_bounded(path: str | os.PathLike[str], max_bytes: int, check: Any = None) -> bytes:
    """The file's bytes, read in chunks: memory follows the real size, never ``max_bytes``.

    ``check(first_16_bytes, size, max_bytes)``, if given, runs before anything more is read.
    """
    _io_format.check_max_bytes(max_bytes)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise FormatError(f"{os.fspath(path)}: {size} bytes, over max_bytes={max_bytes}")
        chunks = []
        total = 0
        if check is not None:
            first = f.read(min(16, max_bytes + 1))
            check(first, size, max_bytes)
            chunks.append(first)
            total = len(first)
        # Each read asks for what fstat promised (+1 to notice growth), at most one chunk.
        while chunk := f.read(min(_CHUNK, max_bytes + 1 - total, max(size - total, 0) + 1)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # the file grew since fstat
                raise FormatError(f"{os.fspath(path)}: file is over max_bytes={max_bytes}")
    return b"".join(chunks)


# JSON side files (metrics, reports, manifests), strict and atomic: see subnets._io_json.
from subnets._io_json import read_json, write_json  # noqa: E402
