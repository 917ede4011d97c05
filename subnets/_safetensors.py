"""The safetensors side of :mod:`subnets.io` (private): encoder, bounded decoder, DEFLATE layer.

A safetensors file (https://huggingface.co/docs/safetensors) is::

    offset  size  field
    0       8     N = header length, uint64 little-endian
    8       N     header: UTF-8 JSON object, starting with "{", right-padded with spaces
    8+N     D     data: every tensor's bytes, C-ordered, little-endian, contiguous, no gaps

The header maps each tensor name to ``{"dtype": "F32", "shape": [3, 3, 1, 8],
"data_offsets": [begin, end]}`` (offsets relative to the data start) and may hold
``"__metadata__"``, a string-to-string map. What subnets writes there:

- tensor names: the variables path joined by ``/`` (``"params/conv1/kernel"``), each key escaped
  as in JSON Pointer (RFC 6901: ``~`` as ``~0``, ``/`` as ``~1``), so any ``str`` key survives;
  header order is the tree's insertion order; the data are laid out largest itemsize first, so
  every tensor is aligned to its itemsize (the header is padded to 8 bytes);
- ``__metadata__["subnets.layout"]``: JSON ``{"format": "subnets.safetensors", "version": 1,
  "empty": [[path, at], ...]}`` (empty dicts, as in the version-1 format), or
  ``{"format": "subnets.safetensors.deflate", "version": 1}`` for a compressed file, whose one
  ``U8`` tensor ``"deflated"`` holds a zlib stream (RFC 1950) of a complete subnets safetensors
  file;
- ``__metadata__["subnets.crc32"]``: 8 lowercase hex digits, the CRC-32 (``zlib.crc32``) of the
  whole file with those 8 digits read as ``00000000``; the header holds the bytes
  ``"subnets.crc32":"`` exactly once, right before them;
- every key of the caller's ``meta`` (e.g. ``format``, ``version``, ``graph``, ``levels``), its
  value JSON-encoded (``metadata["levels"]`` is the string ``'[{"c1": 8}]'``).

A reader checks the header length against the input length and :data:`MAX_HEADER` before
reading the header, then every field: dtypes, shapes (bounded products), offsets (contiguous,
covering the data exactly), names (no collisions, bounded depth), the layout and the CRC. Files
written by other tools (no ``subnets.layout``) load too: names are split at ``/`` into nested
dicts and ``meta`` is their ``__metadata__`` as strings.

Example:
    >>> import numpy as np
    >>> from subnets import _safetensors
    >>> data = _safetensors.encode([(("params", "w"), np.ones(2, np.float32))], [], {"n": 1})
    >>> _safetensors.decode(data, 1 << 20, copy=True)
    ({'params': {'w': array([1., 1.], dtype=float32)}}, {'n': 1})

References:
    safetensors format specification (Hugging Face); RFC 6901 (JSON Pointer escaping);
    DNNShifter (Eccles et al., 2023): DEFLATE-compressed model variants.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import zlib
from typing import Any

import numpy as np

from subnets._io_format import (
    _DTYPES,
    _STORAGE,
    MAX_DEPTH,
    MAX_NDIM,
    ArraySpec,
    FormatError,
    Header,
    Path,
    Variables,
    _build,
    _finite_float,
    _inflate,
    _json_default,
    _no_constant,
    _path,
    _unique_pairs,
)

FORMAT = "subnets.safetensors"
DEFLATE_FORMAT = "subnets.safetensors.deflate"
VERSION = 1
LAYOUT_KEY = "subnets.layout"
CRC_KEY = "subnets.crc32"
DEFLATED = "deflated"
MAX_HEADER = 100_000_000  # the safetensors library's own bound on N
_LEN = struct.Struct("<Q")
_ALIGN = 8

_CODES = {"bool": "BOOL", "int8": "I8", "uint8": "U8", "int16": "I16", "uint16": "U16",
          "int32": "I32", "uint32": "U32", "int64": "I64", "uint64": "U64", "float16": "F16",
          "bfloat16": "BF16", "float32": "F32", "float64": "F64"}
_NAMES = {code: name for name, code in _CODES.items()}
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})


def is_safetensors(head: bytes | memoryview) -> bool:
    """Whether the first 9+ bytes look like a safetensors file (a length, then ``{``)."""
    return len(head) >= 9 and bytes(head[8:9]) == b"{"


# --------------------------------------------------------------------------------------------
# Writing.


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _unescape(part: str, name: str) -> str:
    if "~" not in part:
        return part
    out, i = [], 0
    while i < len(part):
        c = part[i]
        if c == "~":
            nxt = part[i + 1 : i + 2]
            if nxt not in ("0", "1"):
                raise FormatError(f"tensor {name!r}: '~' not followed by 0 or 1")
            out.append("~" if nxt == "0" else "/")
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


_CRC_TOKEN = b'"' + CRC_KEY.encode() + b'":"'
_CRC_ZERO = b"0" * 8


def _crc(prefix: bytes, head: bytes, data: bytes | memoryview, at: int) -> str:
    """CRC-32 of ``prefix + head + data`` with ``head[at:at + 8]`` read as ``00000000``."""
    crc = zlib.crc32(head[:at], zlib.crc32(prefix))
    crc = zlib.crc32(head[at + 8 :], zlib.crc32(_CRC_ZERO, crc))
    return f"{zlib.crc32(data, crc):08x}"


def _crc_at(head: bytes) -> int:
    """Where the CRC's 8 digits start in the raw header; FormatError unless exactly once."""
    if head.count(_CRC_TOKEN) != 1:
        raise FormatError(f"the header must hold {_CRC_TOKEN.decode()} exactly once")
    return head.index(_CRC_TOKEN) + len(_CRC_TOKEN)


def _metadata(meta: dict[str, Any]) -> dict[str, str]:
    # Normalise first (numpy scalars, int keys, tuples), then one JSON string per key.
    clean = json.loads(json.dumps(meta, allow_nan=False, default=_json_default))
    out = {}
    for key, value in clean.items():
        if key.startswith("subnets.") or key == "__metadata__":
            raise ValueError(f"meta key {key!r} is reserved for the file layout")
        out[key] = json.dumps(value, allow_nan=False, separators=(",", ":"))
    return out


def encode(leaves: list[tuple[Path, np.ndarray]], empties: list[tuple[Path, int]],
           meta: dict[str, Any], *, layout: dict[str, Any] | None = None) -> bytes:
    """A subnets safetensors file of checked leaves, empty dicts and metadata."""
    metadata = _metadata(meta)
    layout = layout or {"format": FORMAT, "version": VERSION,
                        "empty": [[list(p), at] for p, at in empties]}
    metadata[LAYOUT_KEY] = json.dumps(layout, separators=(",", ":"))
    names = ["/".join(_escape(k) for k in path) for path, _ in leaves]
    if "__metadata__" in names:
        raise ValueError("an array at path ['__metadata__'] cannot be stored in safetensors")
    # Largest itemsize first (stable): every tensor starts at a multiple of its itemsize.
    order = sorted(range(len(leaves)), key=lambda i: -leaves[i][1].dtype.itemsize)
    offsets: dict[int, tuple[int, int]] = {}
    end = 0
    for i in order:
        offsets[i] = (end, end + leaves[i][1].nbytes)
        end += leaves[i][1].nbytes
    data = bytearray(end)
    for i in order:
        arr = leaves[i][1]
        if arr.size:
            name = arr.dtype.name
            dst = np.frombuffer(data, _STORAGE[name], arr.size, offsets[i][0]).reshape(arr.shape)
            np.copyto(dst, arr.view(np.uint16) if name == "bfloat16" else arr, casting="equiv")
    header: dict[str, Any] = {"__metadata__": metadata}
    for i, (name, (_, arr)) in enumerate(zip(names, leaves, strict=True)):
        header[name] = {"dtype": _CODES[arr.dtype.name], "shape": list(arr.shape),
                        "data_offsets": list(offsets[i])}
    metadata[CRC_KEY] = _CRC_ZERO.decode()
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    head += b" " * (-len(head) % _ALIGN)
    prefix, at = _LEN.pack(len(head)), _crc_at(head)
    head = head[:at] + _crc(prefix, head, data, at).encode("ascii") + head[at + 8 :]
    return b"".join((prefix, head, data))


def encode_deflated(inner: bytes, level: int) -> bytes:
    """A compressed file: one ``U8`` tensor holding ``zlib(inner)``, ``inner`` a subnets file."""
    stream = np.frombuffer(zlib.compress(inner, level), np.uint8)
    return encode([((DEFLATED,), stream)], [], {},
                  layout={"format": DEFLATE_FORMAT, "version": VERSION})


# --------------------------------------------------------------------------------------------
# Reading.


def _json(text: bytes, what: str) -> Any:
    try:
        return json.loads(text.decode("utf-8"), object_pairs_hook=_unique_pairs,
                          parse_constant=_no_constant, parse_float=_finite_float)
    except FormatError:
        raise
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{what} is not valid UTF-8 JSON: {e}") from None


def _tensor(name: str, entry: Any, data_len: int, max_bytes: int) -> tuple[str, tuple, int, int]:
    where = f"tensor {name!r}"
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        raise FormatError(f"{where}: expected an object with keys {sorted(_ENTRY_KEYS)}")
    code, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(code, str) or code not in _NAMES:
        raise FormatError(f"{where}: unsupported dtype {code!r} (known: {sorted(_NAMES)})")
    dtype = _NAMES[code]
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise FormatError(f"{where}: shape {shape!r} is not a list of at most {MAX_NDIM} "
                          "non-negative ints")
    bound, size = min(max_bytes, sys.maxsize), _DTYPES[dtype].itemsize
    for d in shape:
        size *= max(d, 1)
        if size > bound:
            raise FormatError(f"{where}: shape {shape} needs more than max_bytes={max_bytes}")
    nbytes = _DTYPES[dtype].itemsize * math.prod(shape)
    if (not isinstance(offs, list) or len(offs) != 2
            or not all(type(o) is int and o >= 0 for o in offs)):
        raise FormatError(f"{where}: data_offsets {offs!r} is not two non-negative ints")
    begin, end = offs
    if not begin <= end <= data_len:
        raise FormatError(f"{where}: bytes [{begin}, {end}) lie outside the {data_len}-byte "
                          "data (truncated?)")
    if end - begin != nbytes:
        raise FormatError(f"{where}: data_offsets span {end - begin} bytes, dtype and shape "
                          f"need {nbytes}")
    return dtype, tuple(shape), begin, nbytes


def _layout(text: str) -> dict[str, Any]:
    layout = _json(text.encode("utf-8"), f"metadata {LAYOUT_KEY!r}")
    if not isinstance(layout, dict) or layout.get("format") not in (FORMAT, DEFLATE_FORMAT):
        raise FormatError(f"metadata {LAYOUT_KEY!r} names no known format")
    if type(layout.get("version")) is not int or layout["version"] != VERSION:
        raise FormatError(f"unsupported {layout['format']} version {layout.get('version')!r} "
                          f"(this reader knows {VERSION})")
    want = {"format", "version", "empty"} if layout["format"] == FORMAT else {"format", "version"}
    if set(layout) != want:
        raise FormatError(f"metadata {LAYOUT_KEY!r} must have exactly the keys {sorted(want)}")
    return layout


def _parse_header(head: bytes, data_len: int | None, max_bytes: int
                  ) -> tuple[dict[str, Any], Header, list[tuple[Path, int]], dict | None]:
    """Everything but the CRC and the array bytes; ``data_len=None``: what the tensors cover."""
    if not head.startswith(b"{"):
        raise FormatError("not a safetensors file (the header does not start with '{')")
    header = _json(head, "safetensors header")
    if not isinstance(header, dict):
        raise FormatError("safetensors header is not a JSON object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError("__metadata__ must map strings to strings")
    layout = _layout(metadata[LAYOUT_KEY]) if LAYOUT_KEY in metadata else None
    reserved = sorted(k for k in metadata if k.startswith("subnets."))
    if layout is None and reserved:
        raise FormatError(f"metadata has {reserved[0]!r} but no {LAYOUT_KEY!r} (damaged)")
    limit = min(max_bytes, sys.maxsize) if data_len is None else data_len
    specs, spans = [], []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, begin, nbytes = _tensor(name, entry, limit, max_bytes)
        parts = name.split("/")
        if layout is not None:
            parts = [_unescape(p, name) for p in parts]
        path = _path(parts, f"tensor {name!r}", allow_root=False)
        specs.append(ArraySpec(path, dtype, shape, begin, nbytes))
        spans.append((begin, begin + nbytes, name))
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            raise FormatError(f"tensor {name!r}: data starts at byte {begin}, expected {pos} "
                              "(tensors must cover the data contiguously)")
        pos = end
    if data_len is not None and pos != data_len:
        raise FormatError(f"data is {data_len} bytes but the tensors end at byte {pos}")
    empties = _empties(layout, len(specs)) if layout and layout["format"] == FORMAT else []
    if layout is None:
        meta: dict[str, Any] = dict(metadata)
    else:
        if CRC_KEY not in metadata:
            raise FormatError(f"metadata has {LAYOUT_KEY!r} but no {CRC_KEY!r}")
        meta = {k: _json(v.encode("utf-8"), f"metadata {k!r}") for k, v in metadata.items()
                if not k.startswith("subnets.")}
    result = Header(meta, tuple(specs), False, pos, pos)
    _build(result.arrays, empties, lambda spec: spec)  # rejects colliding paths
    return header, result, empties, layout


def parse(data: bytes | bytearray | memoryview, max_bytes: int
          ) -> tuple[Header, list[tuple[Path, int]], memoryview, dict[str, Any] | None]:
    """Validate a whole file: ``(header, empties, data view, layout or None)``."""
    view = memoryview(data).cast("B")
    n = len(view)
    if n > max_bytes:
        raise FormatError(f"input is {n} bytes, over max_bytes={max_bytes}")
    if n < _LEN.size:
        raise FormatError(f"truncated: {n} bytes, shorter than the 8-byte header length")
    (head_len,) = _LEN.unpack_from(view)
    check_header_length(head_len, n, max_bytes)
    body = view[8 + head_len :]
    head = bytes(view[8 : 8 + head_len])
    raw, header, empties, layout = _parse_header(head, len(body), max_bytes)
    if layout is not None:
        stored, at = raw["__metadata__"][CRC_KEY], _crc_at(head)
        if head[at : at + 8] != stored.encode("utf-8"):
            raise FormatError(f"{CRC_KEY!r} is not stored as {_CRC_TOKEN.decode()}<8 digits>\"")
        actual = _crc(bytes(view[:8]), head, body, at)
        if stored != actual:
            raise FormatError(f"checksum mismatch (stored {stored!r}, computed {actual!r})")
    return header, empties, body, layout


def check_header_length(head_len: int, total: int, max_bytes: int) -> None:
    """The 8-byte header length checked against the file size and the bounds, before reading."""
    if head_len > MAX_HEADER:
        raise FormatError(f"header length {head_len} is over the bound {MAX_HEADER}")
    if head_len > max_bytes:
        raise FormatError(f"header length {head_len} is over max_bytes={max_bytes}")
    if 8 + head_len > total:
        raise FormatError(f"truncated: {total} bytes, the header length promises at least "
                          f"{8 + head_len}")


def _empties(layout: dict[str, Any], count: int) -> list[tuple[Path, int]]:
    out, last = [], 0
    if not isinstance(layout["empty"], list):
        raise FormatError("layout 'empty' must be a list")
    for i, item in enumerate(layout["empty"]):
        if not isinstance(item, list) or len(item) != 2:
            raise FormatError(f"empty {i}: expected [path, at]")
        path, at = item
        if type(at) is not int or not last <= at <= count:
            raise FormatError(f"empty {i}: 'at' {at!r} is not in [{last}, {count}]")
        last = at
        if isinstance(path, list) and len(path) > MAX_DEPTH:
            raise FormatError(f"empty {i}: path nests {len(path)} levels deep, over {MAX_DEPTH}")
        out.append((_path(path, f"empty {i}", allow_root=True), at))
    return out


def _array(body: memoryview, spec: ArraySpec, copy: bool) -> np.ndarray:
    dtype = _DTYPES[spec.dtype]
    if spec.nbytes == 0:
        return np.zeros(spec.shape, dtype)
    if spec.dtype == "bool" and np.frombuffer(body, np.uint8, spec.nbytes, spec.offset).max() > 1:
        raise FormatError(f"tensor {'/'.join(spec.path)}: bool bytes other than 0 and 1")
    storage = _STORAGE[spec.dtype]
    arr = np.frombuffer(body, storage, spec.nbytes // storage.itemsize, spec.offset)
    arr = arr.reshape(spec.shape).astype(storage.newbyteorder("="), copy=copy)
    return arr.view(dtype) if spec.dtype == "bfloat16" else arr


def _deflated_stream(header: Header, body: memoryview) -> memoryview:
    if len(header.arrays) != 1 or header.arrays[0].path != (DEFLATED,) or \
            header.arrays[0].dtype != "uint8" or header.meta:
        raise FormatError(f"a compressed file holds exactly one uint8 tensor {DEFLATED!r}")
    return body


def peek_stream(stream: bytes | memoryview, max_bytes: int) -> Header:
    """Header of ``zlib(file)``, inflating only the file's first ``8 + N`` bytes (bounded).

    Everything but the CRC and the array bytes is checked; ``inflated_nbytes`` is the size of
    the whole inflated file, over ``max_bytes`` an error.
    """
    inflater = zlib.decompressobj()
    try:
        first = inflater.decompress(stream, _LEN.size)
        if len(first) < _LEN.size:
            raise FormatError("compressed file is truncated (no header length)")
        (head_len,) = _LEN.unpack_from(first)
        check_header_length(head_len, sys.maxsize, max_bytes)
        if 8 + head_len > max_bytes:
            raise FormatError(f"header length {head_len} is over max_bytes={max_bytes}")
        head = inflater.decompress(inflater.unconsumed_tail, head_len) if head_len else b""
    except zlib.error as e:
        raise FormatError(f"compressed payload is corrupt: {e}") from None
    if len(head) < head_len:
        raise FormatError("compressed file is truncated inside its header")
    _, header, _, layout = _parse_header(head, None, max_bytes)
    if layout is None or layout["format"] != FORMAT:
        raise FormatError("a compressed variant must hold an uncompressed subnets file")
    total = _LEN.size + head_len + header.inflated_nbytes
    if total > max_bytes:
        raise FormatError(f"inflated payload length {total} is over max_bytes={max_bytes}")
    return header._replace(compressed=True, stored_nbytes=len(stream), inflated_nbytes=total)


def inflate_stream(stream: bytes | memoryview, max_bytes: int, *, total: int | None = None
                   ) -> bytes:
    """``zlib(file)`` inflated, the size bounded from its header before the rest is inflated.

    ``total``: the size :func:`peek_stream` already returned (skips reading the header again);
    the stream must inflate to exactly that many bytes.
    """
    if total is None:
        total = peek_stream(stream, max_bytes).inflated_nbytes
    elif total > max_bytes:
        raise FormatError(f"inflated payload length {total} is over max_bytes={max_bytes}")
    return _inflate(memoryview(stream), total)


def read_header(data: bytes | bytearray | memoryview, max_bytes: int) -> Header:
    """Header of a file; of a compressed one, the inner file's (``compressed=True``), read
    without inflating its arrays."""
    header, _, body, layout = parse(data, max_bytes)
    if layout is None or layout["format"] == FORMAT:
        return header
    return peek_stream(_deflated_stream(header, body), max_bytes)


def decode(data: bytes | bytearray | memoryview, max_bytes: int, *, copy: bool
           ) -> tuple[Variables, dict[str, Any]]:
    """Validate and decode a whole file (a compressed one is inflated, bounded)."""
    header, empties, body, layout = parse(data, max_bytes)
    if layout is not None and layout["format"] == DEFLATE_FORMAT:
        inner = inflate_stream(_deflated_stream(header, body), max_bytes)
        header, empties, body, layout = parse(inner, max_bytes)
        if layout is None or layout["format"] != FORMAT:
            raise FormatError("a compressed file must hold an uncompressed subnets file")
    tree = _build(header.arrays, empties, lambda spec: _array(body, spec, copy))
    return tree, header.meta
