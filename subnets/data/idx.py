"""A defensive reader (and small writer) for the IDX format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 dimensions, then the row-major payload. Files are often gzipped. The reader trusts nothing
in the header: every size is checked against a bound before anything is allocated, and the payload
must be exactly as long as the header says.

References:
    LeCun, Cortes, Burges. The MNIST database of handwritten digits (IDX format description).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from typing import BinaryIO

import numpy as np

__all__ = ["IDX_DTYPES", "MAX_IDX_BYTES", "read_idx", "write_idx"]

# Code byte -> big-endian numpy dtype, as listed in the IDX description.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES: dict[np.dtype, int] = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}

# A corrupt header can claim petabytes; 2 GiB is far above any IDX data set in use and keeps a
# single bad byte from turning into a MemoryError (or a swap storm) before we notice the damage.
MAX_IDX_BYTES = 2**31
# Real IDX files have 1 to 4 dimensions; allowing up to 8 tolerates exotic writers while still
# rejecting a garbage ndim byte (up to 255) before we read 255 * 4 "dimension" bytes.
_MAX_NDIM = 8
_GZIP_MAGIC = b"\x1f\x8b"


def _open(path: str) -> BinaryIO:
    # Sniff the gzip magic instead of trusting the extension: people gunzip files and keep the
    # name, or download them already decompressed by a proxy.
    with open(path, "rb") as raw:
        head = raw.read(2)
    if head == _GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _read_exact(f: BinaryIO, n: int, path: str, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError(
            f"IDX file {path!r} is truncated: expected {n} bytes of {what}, found {len(data)}"
        )
    return data


def read_idx(path: str | os.PathLike[str], *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Reads one IDX file (plain or gzipped) into a native-byte-order numpy array.

    Args:
        path: the file to read. Gzip compression is detected from the content, not the name.
        max_bytes: the largest payload accepted; a header claiming more is rejected before
            any allocation.

    Returns:
        An array with the header's shape and dtype, in native byte order.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        ValueError: bad magic number, unknown dtype code, implausible ndim, a payload larger than
            ``max_bytes``, a truncated payload, trailing bytes, or a corrupt gzip stream. The
            message names the file and the problem.

    Example:
        >>> import tempfile, numpy as np
        >>> p = tempfile.mkdtemp() + "/a-idx2-ubyte.gz"
        >>> write_idx(p, np.arange(6, dtype=np.uint8).reshape(2, 3))
        >>> read_idx(p).tolist()
        [[0, 1, 2], [3, 4, 5]]
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file {path!r} does not exist (or is not a regular file)")
    try:
        with _open(path) as f:
            return _parse(f, path, max_bytes)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        # A cut-off download surfaces as EOFError from gzip, bit rot as a CRC or zlib error.
        raise ValueError(f"IDX file {path!r} is not a valid gzip stream ({e})") from e


def _parse(f: BinaryIO, path: str, max_bytes: int) -> np.ndarray:
    magic = _read_exact(f, 4, path, "magic number")
    if magic[0] != 0 or magic[1] != 0:
        raise ValueError(
            f"IDX file {path!r} has a bad magic number {magic.hex()}: the first two bytes must be "
            "zero (is this an IDX file?)"
        )
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"IDX file {path!r} has unknown dtype code 0x{code:02X} (known: {known})")
    if not 1 <= ndim <= _MAX_NDIM:
        raise ValueError(f"IDX file {path!r} claims {ndim} dimensions; expected 1..{_MAX_NDIM}")
    dtype = IDX_DTYPES[code]
    shape = struct.unpack(f">{ndim}I", _read_exact(f, 4 * ndim, path, "dimension sizes"))
    # Python ints: the product cannot overflow, so the bound check itself is trustworthy.
    nbytes = dtype.itemsize
    for d in shape:
        nbytes *= d
    if nbytes > max_bytes:
        raise ValueError(
            f"IDX file {path!r} claims shape {shape} of {dtype.name} = {nbytes} bytes, above the "
            f"limit of {max_bytes} bytes (corrupt header?)"
        )
    payload = _read_exact(f, nbytes, path, f"data for shape {shape}")
    if f.read(1):
        raise ValueError(
            f"IDX file {path!r} has trailing bytes after the {nbytes} bytes its header "
            f"declares for shape {shape} (corrupt or concatenated file?)"
        )
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Writes ``array`` as an IDX file, gzipped when ``path`` ends in ``.gz``.

    Args:
        path: destination file.
        array: 1 to 8 dimensional array of uint8, int8, int16, int32, float32 or float64.

    Raises:
        ValueError: the dtype or ndim cannot be represented in IDX.

    Example:
        >>> import tempfile, numpy as np
        >>> p = tempfile.mkdtemp() + "/labels-idx1-ubyte"
        >>> write_idx(p, np.array([3, 1, 4], dtype=np.uint8))
        >>> read_idx(p).tolist()
        [3, 1, 4]
    """
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        raise ValueError(f"dtype {array.dtype} has no IDX code")
    if not 1 <= array.ndim <= _MAX_NDIM:
        raise ValueError(f"IDX needs 1..{_MAX_NDIM} dimensions, got {array.ndim}")
    header = bytes([0, 0, _CODES[native], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    body = np.ascontiguousarray(array, dtype=native.newbyteorder(">")).tobytes()
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + body)
