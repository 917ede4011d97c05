"""The bytes behind :mod:`subnets.io` (private): the version-1 layout, its encoder and decoder.

:mod:`subnets.io` is the public face (argument checks, files, the choice of format; the
default format is safetensors, :mod:`subnets._safetensors`). Here: constants, the dtype table,
packing, and every check :func:`subnets.io.loads` and :func:`subnets.io.peek` make on a
version-1 file (lengths, CRC, header, array specs, bounded inflation).

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
    >>> from subnets import _io_format, io
    >>> _io_format.decode(io.dumps({"w": np.arange(3, dtype=np.int8)}, format="subnets-v1"),
    ...                   1 << 20, copy=True)
    ({'w': array([0, 1, 2], dtype=int8)}, {})

References:
    DNNShifter (Eccles et al., 2023): DEFLATE-compressed model variants.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np

MAGIC = b"\x89SUBNET\n"
VERSION = 1
ALIGN = 16
MAX_NDIM = 32

_PREFIX = struct.Struct("<8sHHIQQ")
_CRC = struct.Struct("<I")
_FLAG_DEFLATE = 1
_HEADER_KEYS = frozenset({"arrays", "empty", "meta"})
_ARRAY_KEYS = frozenset({"path", "dtype", "shape", "offset"})
_EMPTY_KEYS = frozenset({"path", "at"})

_NUMPY_NAMES = "bool int8 uint8 int16 uint16 int32 uint32 int64 uint64 float16 float32 float64"
_DTYPES: dict[str, np.dtype] = {name: np.dtype(name) for name in _NUMPY_NAMES.split()}
_DTYPES["bfloat16"] = np.dtype(ml_dtypes.bfloat16)
SUPPORTED_DTYPES: tuple[str, ...] = tuple(_DTYPES)
# bfloat16 has no byte-order variants in numpy, so its bits travel as little-endian uint16.
_STORAGE = {
    name: np.dtype("<u2") if name == "bfloat16" else dt.newbyteorder("<")
    for name, dt in _DTYPES.items()
}

Variables = dict[str, Any]
Path = tuple[str, ...]


class FormatError(ValueError):
    """Input is not a valid subnets file: truncated, corrupt, forged or over a size bound."""


class ArraySpec(NamedTuple):
    """Where one array lives in the inflated payload."""

    path: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


class Header(NamedTuple):
    """A validated header: everything about a file except the array values.

    Attributes:
        meta: the JSON metadata dict.
        arrays: one :class:`ArraySpec` per leaf, in order.
        compressed: whether the payload is zlib-compressed.
        stored_nbytes: payload bytes in the file.
        inflated_nbytes: payload bytes once inflated: the memory :func:`subnets.io.loads` allocates.
    """

    meta: dict[str, Any]
    arrays: tuple[ArraySpec, ...]
    compressed: bool
    stored_nbytes: int
    inflated_nbytes: int


# --------------------------------------------------------------------------------------------
# Writing.


MAX_DEPTH = 64  # nesting of a variables tree; real models use < 10


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _json_default(obj: Any) -> Any:
    # numpy / JAX scalars (an accuracy from jnp.mean, a count from np.sum) are common in metadata.
    if isinstance(obj, np.generic) or (hasattr(obj, "__array__") and np.ndim(obj) == 0):
        return np.asarray(obj).item()
    raise TypeError(f"metadata value {obj!r} of type {type(obj).__name__} is not JSON")


def encode(
    leaves: list[tuple[Path, np.ndarray]],
    empties: list[tuple[Path, int]],
    meta: dict[str, Any],
    *,
    compress: bool,
    level: int,
) -> bytes:
    """Packs checked leaves, empty dicts and metadata into a file (see :func:`subnets.io.dumps`)."""
    entries = []
    end = 0
    for path, arr in leaves:
        offset = _align(end)
        entries.append(
            {
                "path": list(path),
                "dtype": arr.dtype.name,
                "shape": list(arr.shape),
                "offset": offset,
            }
        )
        end = offset + arr.nbytes
    header = {
        "arrays": entries,
        "empty": [{"path": list(p), "at": at} for p, at in empties],
        "meta": meta,
    }
    # ensure_ascii keeps any str (even a lone surrogate) encodable and round-trippable.
    text = json.dumps(header, allow_nan=False, separators=(",", ":"), default=_json_default)
    head = text.encode("ascii")
    head += b" " * (_align(len(head)) - len(head))

    raw = bytearray(end)  # zero-filled, so alignment padding is zeros
    for (_, arr), entry in zip(leaves, entries, strict=True):
        if arr.size == 0:
            continue
        name = entry["dtype"]
        dst = np.frombuffer(raw, _STORAGE[name], arr.size, entry["offset"]).reshape(arr.shape)
        np.copyto(dst, arr.view(np.uint16) if name == "bfloat16" else arr, casting="equiv")
    payload = zlib.compress(raw, level) if compress else raw

    prefix = _PREFIX.pack(
        MAGIC, VERSION, _FLAG_DEFLATE if compress else 0, len(head), len(payload), end
    )
    crc = zlib.crc32(payload, zlib.crc32(head, zlib.crc32(prefix)))
    return b"".join((prefix, head, payload, _CRC.pack(crc)))


# --------------------------------------------------------------------------------------------
# Reading. Every check raises FormatError; nothing is allocated before its size is bounded.


def _no_constant(name: str) -> Any:
    raise FormatError(f"header JSON holds the non-standard constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise FormatError(f"header JSON holds the non-finite number {text}")
    return value


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise FormatError(f"header JSON repeats the key {dup!r}")
    return out


def _path(value: Any, where: str, allow_root: bool) -> Path:
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise FormatError(f"{where}: path {value!r} is not a list of strings")
    if len(value) > MAX_DEPTH:
        raise FormatError(f"{where}: path nests {len(value)} levels deep, over {MAX_DEPTH}")
    if not value and not allow_root:
        raise FormatError(f"{where}: an array cannot be the root")
    return tuple(value)


def _insert(tree: dict[str, Any], path: Path, value: Any) -> None:
    """Places ``value`` (None for an empty dict) at ``path``, rejecting collisions."""
    node = tree
    for i, key in enumerate(path):
        if value is not None and i == len(path) - 1:
            if key in node:
                raise FormatError(f"path {list(path)} appears twice")
            node[key] = value
            return
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise FormatError(
                f"path {list(path)} passes through the array at {list(path[: i + 1])}"
            )
        node = child


def _build(
    specs: tuple[ArraySpec, ...], empties: list[tuple[Path, int]], leaf: Callable[[ArraySpec], Any]
) -> Variables:
    """Nests ``leaf(spec)`` for every array and the empty dicts, in their stored order."""
    tree: Variables = {}
    pending = iter(empties)
    nxt = next(pending, None)
    for i, spec in enumerate((*specs, None)):
        while nxt is not None and nxt[1] == i:
            _insert(tree, nxt[0], None)
            nxt = next(pending, None)
        if spec is not None:
            _insert(tree, spec.path, leaf(spec))
    for path, _ in empties:
        node = tree
        for key in path:
            node = node[key]
        if node:
            raise FormatError(f"path {list(path)} is declared empty but is not")
    return tree


def _spec(entry: Any, index: int, end: int, raw_len: int, max_bytes: int) -> ArraySpec:
    where = f"array {index}"
    if not isinstance(entry, dict) or set(entry) != _ARRAY_KEYS:
        raise FormatError(f"{where}: expected an object with keys {sorted(_ARRAY_KEYS)}")
    path = _path(entry["path"], where, allow_root=False)
    where = f"array {list(path)}"
    dtype, shape, offset = entry["dtype"], entry["shape"], entry["offset"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise FormatError(f"{where}: unsupported dtype {dtype!r}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise FormatError(
            f"{where}: shape {shape!r} is not a list of at most {MAX_NDIM} non-negative ints"
        )
    # Zero dims are left out of the bound: numpy rejects shape (0, 2**70) all the same, and the
    # running check keeps every intermediate product small.
    bound = min(max_bytes, sys.maxsize)
    nonzero = _DTYPES[dtype].itemsize
    for d in shape:
        nonzero *= max(d, 1)
        if nonzero > bound:
            raise FormatError(f"{where}: shape {shape} needs more than max_bytes={max_bytes}")
    nbytes = _DTYPES[dtype].itemsize * math.prod(shape)
    if type(offset) is not int or offset < 0:
        raise FormatError(f"{where}: offset {offset!r} is not a non-negative int")
    if offset + nbytes > raw_len:
        raise FormatError(
            f"{where}: bytes [{offset}, {offset + nbytes}) lie outside the {raw_len}-byte payload"
        )
    if offset != _align(end):
        raise FormatError(
            f"{where}: offset {offset} is not the packed offset {_align(end)} "
            f"(arrays are stored in order, {ALIGN}-byte aligned)"
        )
    return ArraySpec(path, dtype, tuple(shape), offset, nbytes)


def _parse_header(
    text: bytes, raw_len: int, max_bytes: int
) -> tuple[dict[str, Any], tuple[ArraySpec, ...], list[tuple[Path, int]]]:
    try:
        obj = json.loads(
            text.decode("utf-8"),
            object_pairs_hook=_unique_pairs,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except FormatError:
        raise
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, absurd nesting or digits
        raise FormatError(f"header is not valid UTF-8 JSON: {e}") from None
    if not isinstance(obj, dict) or set(obj) != _HEADER_KEYS:
        raise FormatError(f"header must be a JSON object with keys {sorted(_HEADER_KEYS)}")
    arrays, empty, meta = obj["arrays"], obj["empty"], obj["meta"]
    if not isinstance(arrays, list) or not isinstance(empty, list):
        raise FormatError("header 'arrays' and 'empty' must be lists")
    if not isinstance(meta, dict):
        raise FormatError("header 'meta' must be a JSON object")

    specs = []
    end = 0
    for i, entry in enumerate(arrays):
        spec = _spec(entry, i, end, raw_len, max_bytes)
        end = spec.offset + spec.nbytes
        specs.append(spec)
    if end != raw_len:
        raise FormatError(f"payload is {raw_len} bytes but the arrays end at byte {end}")

    empties = []
    last_at = 0
    for i, entry in enumerate(empty):
        if not isinstance(entry, dict) or set(entry) != _EMPTY_KEYS:
            raise FormatError(f"empty {i}: expected an object with keys {sorted(_EMPTY_KEYS)}")
        at = entry["at"]
        if type(at) is not int or not last_at <= at <= len(specs):
            raise FormatError(f"empty {i}: 'at' {at!r} is not in [{last_at}, {len(specs)}]")
        last_at = at
        empties.append((_path(entry["path"], f"empty {i}", allow_root=True), at))
    return meta, tuple(specs), empties


def check_max_bytes(max_bytes: int) -> None:
    if type(max_bytes) is not int or max_bytes < 0:
        raise ValueError(f"max_bytes must be a non-negative int, got {max_bytes!r}")


def _parse(
    data: bytes | bytearray | memoryview, max_bytes: int
) -> tuple[Header, list[tuple[Path, int]], memoryview]:
    check_max_bytes(max_bytes)
    view = memoryview(data).cast("B")
    n = len(view)
    if view[: len(MAGIC)] != MAGIC[: min(n, len(MAGIC))]:
        raise FormatError(f"not a subnets file (bad magic {bytes(view[: len(MAGIC)])!r})")
    if n > max_bytes:
        raise FormatError(f"input is {n} bytes, over max_bytes={max_bytes}")
    if n < _PREFIX.size + _CRC.size:
        raise FormatError(f"truncated: {n} bytes, shorter than the fixed-size fields")
    _, version, flags, head_len, stored_len, raw_len = _PREFIX.unpack_from(view)
    if version != VERSION:
        raise FormatError(f"unsupported format version {version} (this reader knows {VERSION})")
    if flags & ~_FLAG_DEFLATE:
        raise FormatError(f"unknown flags {flags:#06x}")
    sizes = (("header", head_len), ("payload", stored_len), ("inflated payload", raw_len))
    for what, size in sizes:
        if size > max_bytes:
            raise FormatError(f"{what} length {size} is over max_bytes={max_bytes}")
    expected = _PREFIX.size + head_len + stored_len + _CRC.size
    if n < expected:
        raise FormatError(f"truncated: {n} bytes, the length fields promise {expected}")
    if n > expected:
        raise FormatError(f"{n - expected} unexpected bytes after the end of the file")
    compressed = bool(flags & _FLAG_DEFLATE)
    if not compressed and stored_len != raw_len:
        raise FormatError(f"uncompressed payload is {stored_len} bytes but declares {raw_len}")
    (crc,) = _CRC.unpack_from(view, n - _CRC.size)
    actual = zlib.crc32(view[: n - _CRC.size])
    if crc != actual:
        raise FormatError(f"checksum mismatch (stored {crc:#010x}, computed {actual:#010x})")
    start = _PREFIX.size + head_len
    meta, specs, empties = _parse_header(bytes(view[_PREFIX.size : start]), raw_len, max_bytes)
    _build(specs, empties, lambda spec: spec)  # rejects colliding paths before any inflation
    header = Header(meta, specs, compressed, stored_len, raw_len)
    return header, empties, view[start : start + stored_len]


def _inflate(stored: memoryview, raw_len: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        # max_length bounds the allocation; 0 would mean "unbounded", hence max(..., 1).
        raw = inflater.decompress(stored, max(raw_len, 1))
    except zlib.error as e:
        raise FormatError(f"compressed payload is corrupt: {e}") from None
    if len(raw) > raw_len or inflater.unconsumed_tail:
        raise FormatError(f"compressed payload inflates to more than the declared {raw_len} bytes")
    if not inflater.eof:
        raise FormatError("compressed payload is truncated")
    if len(raw) != raw_len:
        raise FormatError(f"compressed payload inflates to {len(raw)} bytes, not {raw_len}")
    if inflater.unused_data:
        raise FormatError("compressed payload has bytes after the end of its zlib stream")
    return raw


def _decode(raw: bytes | memoryview, spec: ArraySpec, copy: bool) -> np.ndarray:
    dtype = _DTYPES[spec.dtype]
    if spec.nbytes == 0:
        return np.zeros(spec.shape, dtype)
    if spec.dtype == "bool":
        # Anything but 0/1 in a bool is undefined behaviour in numpy.
        if np.frombuffer(raw, np.uint8, spec.nbytes, spec.offset).max() > 1:
            raise FormatError(f"array {list(spec.path)}: bool bytes other than 0 and 1")
    storage = _STORAGE[spec.dtype]
    count = spec.nbytes // storage.itemsize
    arr = np.frombuffer(raw, storage, count, spec.offset).reshape(spec.shape)
    # astype is a no-op view on little-endian hosts when copy=False and swaps bytes otherwise.
    arr = arr.astype(storage.newbyteorder("="), copy=copy)
    return arr.view(dtype) if spec.dtype == "bfloat16" else arr


def read_header(data: bytes | bytearray | memoryview, max_bytes: int) -> Header:
    """Validates everything but the array values (see :func:`subnets.io.peek`)."""
    return _parse(data, max_bytes)[0]


def decode(
    data: bytes | bytearray | memoryview, max_bytes: int, *, copy: bool
) -> tuple[Variables, dict[str, Any]]:
    """Validates and decodes a whole file (see :func:`subnets.io.loads`)."""
    header, empties, stored = _parse(data, max_bytes)
    raw = _inflate(stored, header.inflated_nbytes) if header.compressed else stored
    return _build(header.arrays, empties, lambda spec: _decode(raw, spec, copy)), header.meta
