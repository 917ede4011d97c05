"""A nested family of subnetworks over ONE permuted weight set, switched in microseconds.

After the importance permutation every level of a REDS family is a prefix of every array, so the
family stores the full variables once; level ``i`` is ``slice_widths(variables, levels[i])``. One
executable per level (and batch shape) is compiled ahead of time with the slicing *inside* jit,
so a switch is a dict lookup and a pointer change, with no tracing, copying or allocation.

With BatchNorm each level may keep its own running statistics (the statistics of a narrow
subnetwork differ from the full one's); they are stored stacked, one full-size set per level, and
``level_variables(i)`` carries level ``i``'s.

Example:
    >>> import jax, numpy as np, subnets
    >>> from subnets.runtime.family import Family
    >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    >>> v = net.init(jax.random.key(0))
    >>> fam = Family(net, v, [{"h0": 16, "h1": 16, "h2": 16}, net.graph.full_widths()])
    >>> fam.compile((2, 8))
    >>> fam.switch(0)
    >>> fam(np.zeros((2, 8), np.float32)).shape
    (2, 3)
    >>> fam.level_variables(0)["params"]["dense1"]["kernel"].shape
    (16, 16)

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.1 (contiguous nested weights) and Sec. 5
    (switching in tens of microseconds on a microcontroller).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from subnets import _checks, io
from subnets.transforms import slice_widths

FORMAT = "subnets.family"
# Version 3 stores the variables' collections at the top level ("params/conv1/kernel", readable
# as such from a safetensors file); version 2 nested them under "variables" and stored the
# channel graph (model-free loading); version 1 named a zoo model.
FORMAT_VERSION = 3
READ_VERSIONS = (1, 2, 3)
LEVEL_STATS = "level_batch_stats"
MAX_LEVELS = 256  # a forged file must not make the loader compile thousands of levels


def _complete(net: Any, level: Mapping[str, int], index: int) -> dict[str, int]:
    graph = net.graph
    try:
        graph.check_widths(level)
    except ValueError as e:
        raise ValueError(f"level {index}: {e}") from None
    return {g.name: int(level.get(g.name, g.size)) for g in graph.free}


def _nbytes(tree: Any) -> int:
    return int(sum(np.dtype(a.dtype).itemsize * int(np.prod(a.shape))
                   for a in jax.tree.leaves(tree)))


class Family:
    """Nested subnetworks sharing one permuted variables tree.

    Args:
        net: the :class:`~subnets.models.Model` (``graph``, ``input_shape``, ``apply``): a zoo
            net, :func:`~subnets.models.from_linen` / :func:`~subnets.models.from_nnx` of your
            own, or :func:`~subnets.models.from_graph` of a stored graph.
        variables: the importance-permuted FULL variables.
        levels: nested widths dicts, smallest first (groups left out are at full width).
        level_batch_stats: optional per-level running statistics: a list of full-size
            ``batch_stats`` trees, or one tree stacked along a leading level axis. Default:
            every level uses ``variables["batch_stats"]``.
        batch_shape: compile every level for this input shape now (else on :meth:`compile`
            or at the first call with a new shape).

    Raises:
        ValueError: a level names an unknown group or an out-of-range width, levels are not
            nested (the message names the group and both levels), or the statistics disagree.
    """

    def __init__(self, net: Any, variables: Mapping, levels: Sequence[Mapping[str, int]], *,
                 level_batch_stats: Any = None,
                 batch_shape: tuple[int, ...] | None = None) -> None:
        from subnets.models.protocol import check_model

        check_model(net, "Family")
        if not levels:
            raise ValueError("a Family needs at least one level")
        net.graph.validate(variables)
        self.net = net
        self.levels = [_complete(net, lv, i) for i, lv in enumerate(levels)]
        for i in range(1, len(self.levels)):
            for g, w in self.levels[i].items():
                if w < self.levels[i - 1][g]:
                    raise ValueError(f"levels are not nested: group {g!r} has width "
                                     f"{self.levels[i - 1][g]} at level {i - 1} but {w} at "
                                     f"level {i}")
        self.variables = jax.tree.map(jnp.asarray, dict(variables))
        self.level_batch_stats = self._stack_stats(level_batch_stats)
        self._executables: list[dict[tuple, Any]] = [{} for _ in self.levels]
        self._level = len(self.levels) - 1
        self._active = self._executables[self._level]
        if batch_shape is not None:
            self.compile(batch_shape)

    def _stack_stats(self, stats: Any) -> Any:
        if stats is None:
            return None
        if "batch_stats" not in self.variables:
            raise ValueError("level_batch_stats given but the variables have no batch_stats")
        if isinstance(stats, list | tuple):
            if len(stats) != len(self.levels):
                raise ValueError(f"level_batch_stats has {len(stats)} entries for "
                                 f"{len(self.levels)} levels")
            stats = jax.tree.map(lambda *a: jnp.stack(a), *stats)
        ref = self.variables["batch_stats"]
        if jax.tree.structure(stats) != jax.tree.structure(ref):
            raise ValueError("level_batch_stats does not have the structure of batch_stats")
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(stats),
                                jax.tree.leaves(ref), strict=True):
            if tuple(a.shape) != (len(self.levels),) + tuple(b.shape):
                raise ValueError(f"level_batch_stats{jax.tree_util.keystr(path)} has shape "
                                 f"{a.shape}, expected {(len(self.levels),) + b.shape}")
        return jax.tree.map(jnp.asarray, stats)

    # ------------------------------------------------------------------ levels as variables
    def __len__(self) -> int:
        return len(self.levels)

    def _index(self, level: int) -> int:
        n = len(self.levels)
        if not -n <= int(level) < n:
            raise IndexError(f"level {level} out of range for a family of {n} levels")
        return int(level) % n

    def _with_stats(self, variables: Mapping, stats: Any, i: int) -> dict:
        if stats is None:
            return dict(variables)
        return {**variables, "batch_stats": jax.tree.map(lambda a: a[i], stats)}

    def level_variables(self, i: int) -> dict:
        """Level ``i``'s variables, physically sliced: a prefix of every array."""
        i = self._index(i)
        v = self._with_stats(self.variables, self.level_batch_stats, i)
        return slice_widths(self.net.graph, v, self.levels[i])

    # ------------------------------------------------------------------ compiled execution
    def _level_fn(self, i: int):
        widths, graph, net = self.levels[i], self.net.graph, self.net

        def run(variables, stats, x):
            v = self._with_stats(variables, stats, i)
            return net.apply(slice_widths(graph, v, widths), x)

        return run

    def compile(self, batch_shape: tuple[int, ...], dtype: Any = jnp.float32) -> None:
        """Compile every level ahead of time for inputs of ``batch_shape``."""
        shape = tuple(int(s) for s in batch_shape)
        if len(shape) < 2:
            raise ValueError(f"batch_shape {shape} needs a batch axis and an example shape "
                             f"such as {(1,) + tuple(self.net.input_shape)}")
        spec = jax.ShapeDtypeStruct(shape, dtype)
        for i, table in enumerate(self._executables):
            if (shape, np.dtype(dtype)) not in table:
                lowered = jax.jit(self._level_fn(i)).lower(self.variables,
                                                           self.level_batch_stats, spec)
                table[(shape, np.dtype(dtype))] = lowered.compile()

    def executable(self, level: int, batch_shape: tuple[int, ...], dtype: Any = jnp.float32):
        """The compiled executable of ``level`` for ``batch_shape`` (compiled if missing)."""
        key = (tuple(batch_shape), np.dtype(dtype))
        table = self._executables[self._index(level)]
        if key not in table:
            self.compile(batch_shape, dtype)
        return table[key]

    def switch(self, level: int) -> None:
        """Make ``level`` the one ``family(x)`` runs: a lookup and a pointer change."""
        level = _checks.level_index(level, len(self.levels))
        self._active = self._executables[level]
        self._level = level

    @property
    def level(self) -> int:
        """The active level's index."""
        return self._level % len(self.levels)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits of the active level (see :meth:`switch`)."""
        exe = self._active.get((x.shape, x.dtype))
        if exe is None:
            exe = self.executable(self._level, x.shape, x.dtype)
        return exe(self.variables, self.level_batch_stats, x)

    def apply(self, x: jax.Array, level: int) -> jax.Array:
        """Logits of ``level`` for the batch ``x`` (eval mode), without switching."""
        x = jnp.asarray(x)
        return self.executable(level, x.shape, x.dtype)(self.variables,
                                                         self.level_batch_stats, x)

    def replace(self, variables: Mapping, *, level_batch_stats: Any = None) -> Family:
        """A family of the same levels over new weights, sharing the compiled executables.

        The executables take the weights as arguments, so after fine-tuning no level is
        recompiled, provided the new arrays have the same structure, shapes and dtypes.
        """
        new = Family(self.net, variables, self.levels, level_batch_stats=level_batch_stats)
        same = (jax.tree.structure((new.variables, new.level_batch_stats))
                == jax.tree.structure((self.variables, self.level_batch_stats))
                and all(a.shape == b.shape and a.dtype == b.dtype for a, b in zip(
                    jax.tree.leaves((new.variables, new.level_batch_stats)),
                    jax.tree.leaves((self.variables, self.level_batch_stats)), strict=True)))
        if same:
            new._executables = self._executables
            new._active = new._executables[new._level]
        return new

    # ------------------------------------------------------------------ memory and storage
    def memory_bytes(self) -> int:
        """Bytes held: the full variables once, plus the per-level statistics if any."""
        return _nbytes(self.variables) + _nbytes(self.level_batch_stats or {})

    def separate_bytes(self) -> int:
        """Bytes that separate copies of every level would need (the portfolio alternative)."""
        return sum(_nbytes(jax.eval_shape(lambda i=i: self.level_variables(i)))
                   for i in range(len(self.levels)))

    @property
    def model(self) -> Any:
        """The model the levels run on (the same object as ``net``)."""
        return self.net

    def meta(self) -> dict:
        """JSON metadata that :meth:`load` needs: the graph (structure and program) and levels."""
        from subnets.models.protocol import describe

        return {"format": FORMAT, "version": FORMAT_VERSION, "label": describe(self.net)["model"],
                "input_shape": [int(s) for s in self.net.input_shape],
                "graph": self.net.graph.to_dict(),
                "levels": self.levels, "level_stats": self.level_batch_stats is not None}

    def save(self, path: str | os.PathLike, *, compress: bool = False,
             meta: Mapping[str, Any] | None = None, format: str = "safetensors") -> None:
        """Write the family to ``path`` atomically in the safe :mod:`subnets.io` format.

        The default is a safetensors file: the tensors are the variables by path
        (``"params/conv1/kernel"``, ``"batch_stats/bn1/mean"``) plus, with per-level
        statistics, ``"level_batch_stats/..."`` stacked along a leading level axis; its
        ``__metadata__`` holds ``format``, ``version``, ``graph``, ``levels``, ``input_shape``,
        ``label``, ``level_stats`` (each JSON-encoded) and ``extra``. PyTorch reads it with
        ``safetensors.torch.load_file(path)``; a level is a prefix of every array along the
        graph's channel axes (see ``levels``).

        Args:
            path: destination file (conventionally ``*.subnets``).
            compress: DEFLATE the payload (then the file holds one zlib-compressed tensor; see
                :mod:`subnets.io` for how to read it without subnets).
            meta: extra JSON metadata kept under ``meta["extra"]``.
            format: ``"safetensors"`` or ``"subnets-v1"`` (:func:`subnets.io.dumps`).

        Raises:
            ValueError: the variables have a collection named ``"level_batch_stats"``.
        """
        if LEVEL_STATS in self.variables:
            raise ValueError(f"the variables have a collection named {LEVEL_STATS!r}, which "
                             "a family file reserves for the per-level statistics")
        tree = dict(self.variables)
        if self.level_batch_stats is not None:
            tree[LEVEL_STATS] = self.level_batch_stats
        info = self.meta()
        if meta:
            info["extra"] = dict(meta)
        io.save(path, tree, meta=info, compress=compress, format=format)

    @classmethod
    def load(cls, path: str | os.PathLike, *, batch_shape: tuple[int, ...] | None = None,
             model: Any = None, net: Any = None) -> Family:
        """Read a family written by :meth:`save`; no model code is needed.

        With no ``model`` the levels run the stored graph's program
        (:func:`subnets.models.from_graph`, i.e. :func:`subnets.graph.run`). Older files still
        load: subnets-v1 containers, family version 2 (arrays under ``"variables"``) and
        version 1 (which named a zoo model instead of storing the graph).

        Args:
            path: the file.
            batch_shape: compile every level for this shape right away.
            model: the model to run the levels with (e.g. the original Flax model's adapter).
            net: the older name of ``model``.

        Raises:
            subnets.io.FormatError: the file is corrupt or not a family (names the file).

        Example:
            >>> import os, tempfile, jax, numpy as np, subnets
            >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
            >>> fam = Family(net, net.init(jax.random.key(0)), [{"h0": 8}, {}])
            >>> path = os.path.join(tempfile.mkdtemp(), "f.subnets")
            >>> fam.save(path)
            >>> back = Family.load(path)  # no model: runs the stored graph
            >>> x = np.ones((2, 8), np.float32)
            >>> bool(np.allclose(back.apply(x, 0), fam.apply(x, 0), atol=1e-5))
            True
        """
        tree, meta = io.load(path)
        where = os.fspath(path)
        if meta.get("format") != FORMAT:
            raise io.FormatError(f"{where}: not a subnets family file "
                                 f"(format {meta.get('format')!r})")
        if meta.get("version") not in READ_VERSIONS:
            raise io.FormatError(f"{where}: family format version {meta.get('version')!r}, "
                                 f"this reader knows {READ_VERSIONS}")
        if meta["version"] == 3:
            variables = {k: v for k, v in tree.items() if k != LEVEL_STATS}
        elif isinstance(tree.get("variables"), dict):
            variables = tree["variables"]
        else:
            raise io.FormatError(f"{where}: a version-{meta['version']} family file holds its "
                                 "arrays under 'variables', this one does not")
        model = model if model is not None else net
        if model is None:
            model = _stored_model(meta, where)
        if not isinstance(meta.get("levels"), list) or not 1 <= len(meta["levels"]) <= MAX_LEVELS:
            raise io.FormatError(f"{where}: a family holds 1..{MAX_LEVELS} levels")
        stats = tree.get(LEVEL_STATS) if meta.get("level_stats") else None
        if meta.get("level_stats") and not isinstance(stats, dict):
            raise io.FormatError(f"{where}: level_stats is set but the file holds no "
                                 f"{LEVEL_STATS!r}")
        return cls(model, variables, meta["levels"], level_batch_stats=stats,
                   batch_shape=batch_shape)

    def __repr__(self) -> str:
        label = getattr(self.net, "name", type(self.net).__name__)
        return (f"Family({label!r}, {len(self.levels)} levels, "
                f"active={self._level}, {self.memory_bytes()} bytes)")


def _stored_model(meta: Mapping[str, Any], where: str) -> Any:
    """The model a family file describes: its graph (v2) or, for v1 files, its zoo entry."""
    from subnets.graph import ChannelGraph
    from subnets.models import from_graph

    if meta.get("version") == 1:
        from subnets.models import zoo

        try:
            return zoo.from_meta(meta)
        except (KeyError, TypeError, ValueError) as e:
            raise io.FormatError(f"{where}: version-1 family metadata names no zoo model "
                                 f"({e})") from None
    try:
        return from_graph(ChannelGraph.from_dict(meta["graph"]), name=meta.get("label"))
    except (KeyError, TypeError, ValueError) as e:
        raise io.FormatError(f"{where}: the stored channel graph is invalid: {e}") from None
