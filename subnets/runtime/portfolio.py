"""DNNShifter's portfolio: many model variants, one inflated, the rest DEFLATE-compressed.

A :class:`Portfolio` holds named variants (variables plus JSON metadata such as accuracy, MACs and
parameter count). Every variant is kept as a compressed blob (the zlib stream of a
:mod:`subnets.io` safetensors file); only the active one is also held inflated.
:meth:`Portfolio.switch` inflates the requested variant and drops the previous one, so memory
is ``sum(compressed) + inflated(active)`` rather than ``sum(inflated)``. Pruned variants (many
zeros) compress well, which is where the saving comes from.

The inactive variants are never re-compressed on a switch: variables are read-only at inference
(the arrays :meth:`Portfolio.switch` returns are read-only numpy views), so each variant's blob,
made once by :meth:`Portfolio.add`, stays valid and switching away costs only a dropped
reference. DEFLATE compresses several times slower than it inflates, so this is the cheap side
of the trade.

On disk a portfolio (version 2) is one uncompressed safetensors file (:mod:`subnets.io`): one
``uint8`` tensor per variant, ``"variants/NAME"``, holding its blob, and ``__metadata__``
``format`` (``"subnets.portfolio"``), ``version`` (2), ``active`` (a name or null), plus
``graph`` (the model's :meth:`~subnets.graph.ChannelGraph.to_dict`) when the portfolio was made
with a ``model``: then :meth:`Portfolio.load` needs no model code, and :meth:`Portfolio.apply`
runs the variants through :func:`subnets.graph.run`. Loading checks the container's CRC and
every variant's header and size bounds (inflating only each header) before anything is
inflated. Version-1 portfolios (a subnets-v1 container of subnets-v1 blobs) still load; their
blobs are kept as they are, and each blob's kind is told by its first bytes.

Reading a variant without subnets (PyTorch; ``safetensors.numpy.load`` for NumPy)::

    import zlib
    from safetensors import safe_open
    from safetensors.torch import load
    with safe_open("portfolio.subnets", "np") as f:
        blob = f.get_tensor("variants/s80").tobytes()
    weights = load(zlib.decompress(blob))   # {"params/conv0/kernel": tensor, ...}

Example:
    >>> import numpy as np
    >>> from subnets.runtime import Portfolio
    >>> p = Portfolio()
    >>> p.add("dense", {"params": {"w": np.ones((64, 64), np.float32)}}, meta={"accuracy": 0.91})
    >>> p.add("pruned", {"params": {"w": np.ones((16, 64), np.float32)}}, meta={"accuracy": 0.89})
    >>> p.switch("pruned")["params"]["w"].shape
    (16, 64)
    >>> p.active, p.meta("dense")["accuracy"]
    ('pruned', 0.91)
    >>> p.memory_bytes() < p.dense_bytes()
    True

References:
    DNNShifter: Eccles et al., "DNNShifter: An Efficient DNN Pruning System for Edge Computing",
    2023 (arXiv:2309.06973), Sec. on model switching: inactive variants deflated in memory and
    inflated on demand.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from subnets import _safetensors, io
from subnets.io import FormatError

__all__ = ["Portfolio"]

_FORMAT = "subnets.portfolio"
_VERSION = 2
_READ_VERSIONS = (1, 2)
_META_KEYS = frozenset({"format", "version", "active"})
_OPTIONAL_KEYS = frozenset({"graph"})


class Portfolio:
    """Named model variants, the active one inflated, the others DEFLATE-compressed in memory.

    Not thread-safe: guard a shared portfolio with a lock if several threads switch it.

    Args:
        max_inflated_bytes: largest inflated variant :meth:`switch` may produce; checked from
            the stored header before inflating. None means no bound.
        level: zlib compression level (0-9) for :meth:`add`.
        model: the :class:`~subnets.models.Model` every variant is a (pruned, removed) instance
            of; its graph is saved with the portfolio, and :meth:`apply` runs variants with it.

    Example:
        >>> import numpy as np
        >>> from subnets.runtime import Portfolio
        >>> p = Portfolio(max_inflated_bytes=1 << 20)
        >>> p.add("small", {"w": np.zeros(10, np.float32)}, meta={"macs": 10})
        >>> p.names, p.active
        (('small',), None)
        >>> float(p.switch("small")["w"].sum())
        0.0

    References:
        DNNShifter (Eccles et al., 2023).
    """

    def __init__(self, *, max_inflated_bytes: int | None = None, level: int = 6,
                 model: Any = None) -> None:
        if max_inflated_bytes is not None and (
            type(max_inflated_bytes) is not int or max_inflated_bytes < 0
        ):
            raise ValueError(
                f"max_inflated_bytes must be None or an int >= 0: {max_inflated_bytes!r}"
            )
        if type(level) is not int or not 0 <= level <= 9:
            raise ValueError(f"level must be an int in 0..9, got {level!r}")
        if model is not None and not hasattr(model, "graph"):
            raise TypeError(f"model must be a subnets Model (with a graph), got "
                            f"{type(model).__name__}")
        self.max_inflated_bytes = max_inflated_bytes
        self.level = level
        self.model = model
        self._blobs: dict[str, bytes] = {}
        self._headers: dict[str, io.Header] = {}
        self._active: str | None = None
        self._variables: dict[str, Any] | None = None

    # ---------------------------------------------------------------------------------------
    # Contents.

    def add(
        self, name: str, variables: Mapping[str, Any], *, meta: Mapping[str, Any] | None = None
    ) -> None:
        """Compresses ``variables`` and stores them as variant ``name`` (not made active).

        Args:
            name: a new, non-empty variant name.
            variables: nested dict of arrays (see :func:`subnets.io.dumps`).
            meta: JSON metadata, e.g. ``{"accuracy": 0.9, "macs": 1e6, "params": 1e5}``.

        Raises:
            ValueError: ``name`` is empty or already present.
            TypeError: ``variables`` or ``meta`` cannot be stored (see :func:`subnets.io.dumps`).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"variant name must be a non-empty str, got {name!r}")
        if name in self._blobs:
            raise ValueError(f"variant {name!r} already exists; remove() it first")
        blob = zlib.compress(io.dumps(variables, meta=meta), self.level)
        # Our own blob: the real bound is max_inflated_bytes, checked at switch time.
        self._headers[name] = _peek_blob(blob, sys.maxsize)
        self._blobs[name] = blob

    def remove(self, name: str) -> None:
        """Deletes variant ``name``; if it was active, nothing is active afterwards."""
        self._check_name(name)
        if name == self._active:
            self.deactivate()
        del self._blobs[name], self._headers[name]

    def __contains__(self, name: object) -> bool:
        return name in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)

    def __repr__(self) -> str:
        return (
            f"Portfolio(names={self.names}, active={self._active!r}, "
            f"memory_bytes={self.memory_bytes()}, dense_bytes={self.dense_bytes()})"
        )

    @property
    def names(self) -> tuple[str, ...]:
        """Variant names in insertion order."""
        return tuple(self._blobs)

    def meta(self, name: str) -> dict[str, Any]:
        """A copy of variant ``name``'s metadata (as JSON stores it: tuples become lists)."""
        self._check_name(name)
        return json.loads(json.dumps(self._headers[name].meta))

    def _check_name(self, name: str) -> None:
        if name not in self._blobs:
            raise KeyError(f"no variant {name!r}; variants are {list(self._blobs)}")

    # ---------------------------------------------------------------------------------------
    # Switching.

    @property
    def active(self) -> str | None:
        """Name of the inflated variant, or None."""
        return self._active

    @property
    def variables(self) -> dict[str, Any] | None:
        """The active variant's variables (read-only numpy arrays), or None."""
        return self._variables

    def switch(self, name: str) -> dict[str, Any]:
        """Makes ``name`` the active variant and returns its variables.

        Switching to the active variant returns the same object without work. Otherwise the
        bound is checked from the stored header, the variant is inflated (read-only numpy arrays
        sharing one buffer; ``jax.device_put`` them for a device), and only then is the previous
        one dropped, so a failed switch leaves the portfolio as it was.

        Args:
            name: a variant name.

        Returns:
            The variant's nested dict of arrays.

        Raises:
            KeyError: no such variant.
            ValueError: the variant inflates to more than ``max_inflated_bytes``.
            FormatError: the stored blob is corrupt (not possible for blobs made by :meth:`add`
                or accepted by :meth:`load`, short of memory corruption).
        """
        self._check_name(name)
        if name == self._active:
            return self._variables  # type: ignore[return-value]
        need = self._headers[name].inflated_nbytes
        if self.max_inflated_bytes is not None and need > self.max_inflated_bytes:
            raise ValueError(
                f"variant {name!r} inflates to {need} bytes, over "
                f"max_inflated_bytes={self.max_inflated_bytes}"
            )
        blob = self._blobs[name]
        bound = max(need, len(blob))
        if not _is_v1(blob):
            blob = _safetensors.inflate_stream(blob, bound, total=need)
        # copy=False: the arrays are views into the one inflated buffer, no second copy.
        variables, _ = io.loads(blob, max_bytes=bound, copy=False)
        self._active, self._variables = name, variables
        return variables

    def apply(self, x: Any, name: str | None = None) -> Any:
        """Logits of variant ``name`` (default: the active one) for the batch ``x``.

        Runs ``model.apply`` (a portfolio loaded from disk with no model runs the stored graph
        through :func:`subnets.graph.run`); switches to ``name`` first if given.

        Raises:
            ValueError: the portfolio has no model, or no variant is active.
        """
        import jax
        import jax.numpy as jnp

        if self.model is None:
            raise ValueError("this portfolio has no model: make it with Portfolio(model=...) "
                             "or load a file saved with one")
        variables = self.switch(name) if name is not None else self._variables
        if variables is None:
            raise ValueError("no active variant: switch(name) first or pass name")
        return self.model.apply(jax.tree.map(jnp.asarray, variables), jnp.asarray(x))

    def deactivate(self) -> None:
        """Drops the inflated variant, leaving only compressed blobs in memory."""
        self._active, self._variables = None, None

    # ---------------------------------------------------------------------------------------
    # Memory accounting (bytes of array data and blobs; Python object overhead is not counted).

    def compressed_bytes(self, name: str | None = None) -> int:
        """Compressed blob size of ``name``, or of all variants when None."""
        if name is not None:
            self._check_name(name)
            return len(self._blobs[name])
        return sum(len(b) for b in self._blobs.values())

    def inflated_bytes(self, name: str | None = None) -> int:
        """Inflated size of ``name``, or of all variants when None (read from headers)."""
        if name is not None:
            self._check_name(name)
            return self._headers[name].inflated_nbytes
        return sum(h.inflated_nbytes for h in self._headers.values())

    def memory_bytes(self) -> int:
        """Bytes held now: every compressed blob plus the active variant inflated."""
        active = 0 if self._active is None else self.inflated_bytes(self._active)
        return self.compressed_bytes() + active

    def dense_bytes(self) -> int:
        """Bytes that keeping every variant inflated would hold (the no-portfolio baseline)."""
        return self.inflated_bytes()

    # ---------------------------------------------------------------------------------------
    # Persistence.

    def to_bytes(self) -> bytes:
        """Encodes the portfolio (blobs, metadata, active name) as one safetensors file."""
        variants = {name: np.frombuffer(blob, np.uint8) for name, blob in self._blobs.items()}
        meta: dict[str, Any] = {"format": _FORMAT, "version": _VERSION, "active": self._active}
        if self.model is not None:
            meta["graph"] = self.model.graph.to_dict()
        return io.dumps({"variants": variants}, meta=meta)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes :meth:`to_bytes` to ``path`` atomically (see :func:`subnets.io.save`)."""
        io.atomic_write(path, self.to_bytes())

    @classmethod
    def from_bytes(
        cls,
        data: bytes | bytearray | memoryview,
        *,
        max_bytes: int = io.DEFAULT_MAX_BYTES,
        max_inflated_bytes: int | None = None,
        level: int = 6,
        activate: bool = True,
        model: Any = None,
    ) -> Portfolio:
        """Decodes :meth:`to_bytes` output; see :meth:`load` for the arguments."""
        variables, meta = io.loads(data, max_bytes=max_bytes, copy=False)
        return cls._from_parts(variables, meta, max_bytes, max_inflated_bytes, level, activate,
                               model)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = io.DEFAULT_MAX_BYTES,
        max_inflated_bytes: int | None = None,
        level: int = 6,
        activate: bool = True,
        model: Any = None,
    ) -> Portfolio:
        """Reads a portfolio written by :meth:`save`.

        The container and every variant are validated (lengths, CRCs, headers, bounds) before
        anything is inflated; variants stay compressed except the saved active one.

        Args:
            path: file to read.
            max_bytes: bound on the file size and on each variant's inflated size.
            max_inflated_bytes: see :class:`Portfolio`.
            level: see :class:`Portfolio`.
            activate: re-inflate the variant that was active when saved.
            model: the model to run the variants with; default: the graph stored in the file
                (:func:`subnets.models.from_graph`), or none if the file holds no graph.

        Returns:
            The portfolio.

        Raises:
            FormatError: the file is truncated, corrupt, forged or over ``max_bytes``; the
                message names the file (and the variant, when one is at fault).
            ValueError: the saved active variant is over ``max_inflated_bytes``.

        Example:
            >>> import os, tempfile, numpy as np
            >>> from subnets.runtime import Portfolio
            >>> p = Portfolio()
            >>> p.add("a", {"w": np.zeros(8, np.int8)}, meta={"accuracy": 0.5})
            >>> path = os.path.join(tempfile.mkdtemp(), "p.portfolio")
            >>> p.save(path)
            >>> Portfolio.load(path).meta("a")
            {'accuracy': 0.5}

        References:
            DNNShifter (Eccles et al., 2023).
        """
        variables, meta = io.load(path, max_bytes=max_bytes, copy=False)
        try:
            return cls._from_parts(variables, meta, max_bytes, max_inflated_bytes, level, activate,
                                   model)
        except FormatError as e:
            raise FormatError(f"{os.fspath(path)}: {e}") from None

    @classmethod
    def _from_parts(
        cls,
        variables: dict[str, Any],
        meta: dict[str, Any],
        max_bytes: int,
        max_inflated_bytes: int | None,
        level: int,
        activate: bool,
        model: Any = None,
    ) -> Portfolio:
        keys = set(meta)
        if not _META_KEYS <= keys <= _META_KEYS | _OPTIONAL_KEYS or meta["format"] != _FORMAT:
            raise FormatError(f"not a portfolio (metadata {sorted(meta)!r})")
        if type(meta["version"]) is not int or meta["version"] not in _READ_VERSIONS:
            raise FormatError(f"unsupported portfolio version {meta['version']!r}")
        if set(variables) != {"variants"} or not isinstance(variables["variants"], dict):
            raise FormatError("a portfolio holds exactly one dict, 'variants'")
        if model is None and meta.get("graph") is not None:
            model = _graph_model(meta["graph"])
        out = cls(max_inflated_bytes=max_inflated_bytes, level=level, model=model)
        for name, blob in variables["variants"].items():
            if not name or not isinstance(blob, np.ndarray) or blob.dtype != np.uint8:
                raise FormatError(f"variant {name!r} is not a named uint8 blob")
            blob = blob.tobytes()
            try:
                out._headers[name] = _peek_blob(blob, max_bytes, meta["version"])
            except FormatError as e:
                raise FormatError(f"variant {name!r}: {e}") from None
            out._blobs[name] = blob
        active = meta["active"]
        if active is not None and (not isinstance(active, str) or active not in out._blobs):
            raise FormatError(f"active variant {active!r} is not in the portfolio")
        if activate and active is not None:
            try:
                out.switch(active)
            except FormatError as e:
                raise FormatError(f"variant {active!r}: {e}") from None
        return out


def _is_v1(blob: bytes) -> bool:
    return blob[: len(io.MAGIC)] == io.MAGIC


def _peek_blob(blob: bytes, max_bytes: int, version: int = _VERSION) -> io.Header:
    """A variant's header: a subnets-v1 file (all a version-1 portfolio holds), or the zlib
    stream of a safetensors file."""
    if version == 1 or _is_v1(blob):
        return io.peek(blob, max_bytes=max_bytes)
    return _safetensors.peek_stream(blob, max_bytes)


def _graph_model(data: Any) -> Any:
    from subnets.graph import ChannelGraph
    from subnets.models import from_graph

    try:
        return from_graph(ChannelGraph.from_dict(data))
    except (ValueError, TypeError, KeyError) as e:
        raise FormatError(f"stored graph is invalid: {e}") from None

