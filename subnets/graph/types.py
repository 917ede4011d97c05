"""The channel graph's types: members, groups, norms, layers, program ops and the graph itself.

A network's parameters are a plain nested dict of arrays. Several axes of several arrays index
the *same* channels: a conv's output axis, its bias, the norm after it (scale, shift, running
statistics), the next layer's input axis, a depthwise conv's channel axis, every branch that a
residual add joins. A :class:`Group` lists those members, each with its *role* (what the axis
is) and the layer or norm it belongs to; a :class:`ChannelGraph` adds the compute layers, the
norms, the program (ops in execution order) and every array's shape.

Where a flatten turns an ``H x W x C`` map into a vector, the consuming dense kernel's input axis
has length ``H*W*C`` laid out row-major as ``(H*W, C)``; the member records ``spatial=H*W`` and
every algorithm views that axis as ``(spatial, C)`` (:func:`subnets.graph.view`).

Example:
    >>> import numpy as np
    >>> g = ChannelGraph(groups=(
    ...     Group("in", 4, (Member(("params", "d0", "kernel"), 0, role="in"),), fixed=True),
    ...     Group("h", 8, (Member(("params", "d0", "kernel"), 1),
    ...                    Member(("params", "d0", "bias"), 0, role="bias"),
    ...                    Member(("params", "d1", "kernel"), 0, role="in"))),
    ...     Group("out", 2, (Member(("params", "d1", "kernel"), 1),
    ...                      Member(("params", "d1", "bias"), 0, role="bias")), fixed=True)))
    >>> v = {"params": {"d0": {"kernel": np.zeros((4, 8)), "bias": np.zeros(8)},
    ...                 "d1": {"kernel": np.zeros((8, 2)), "bias": np.zeros(2)}}}
    >>> g.validate(v)
    >>> g.widths_of({"params": {"d0": {"kernel": np.zeros((4, 3)), "bias": np.zeros(3)},
    ...                         "d1": {"kernel": np.zeros((3, 2)), "bias": np.zeros(2)}}})
    {'h': 3}

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.1 (permutation invariance);
    Fang et al., DepGraph / Torch-Pruning (CVPR 2023) for coupled channel groups.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from subnets import _checks

Path = tuple[str, ...]
ROLES = ("out", "in", "depthwise", "bias", "scale", "shift", "mean", "var")
LAYER_KINDS = ("dense", "conv", "depthwise")
OP_KINDS = ("layer", "norm", "act", "add", "flatten", "mean", "avg_pool", "max_pool", "output")


@dataclass(frozen=True)
class Member:
    """One axis of one array that indexes a group's channels.

    Attributes:
        path: keys from the variables root to the array, e.g. ``("params", "conv0", "kernel")``.
        axis: the axis (non-negative) that holds the channels.
        spatial: the axis is a flatten of ``(spatial, channels)`` row-major; 1 for a plain axis.
        role: what the axis is, one of :data:`ROLES`.
        layer: the kernel path of the layer the member belongs to (roles out/in/depthwise/bias),
            or the norm's ``id`` (scale/shift/mean/var); ``None`` when declared without it.
    """

    path: Path
    axis: int
    spatial: int = 1
    role: str = "out"
    layer: Path | None = None


@dataclass(frozen=True)
class Group:
    """Channels that must be permuted, sliced and removed together."""

    name: str
    size: int
    members: tuple[Member, ...]
    fixed: bool = False


@dataclass(frozen=True)
class Norm:
    """A normalisation applied per channel of ``group``.

    Attributes:
        id: the common parent of its arrays, e.g. ``("params", "stem_norm")``.
        group: the channel group it normalises.
        scale, shift: paths of its learned gain and offset (``None`` if absent).
        mean, var: paths of its running statistics (``None``: statistics from the batch, as
            GroupNorm / InstanceNorm / LayerNorm compute them).
        epsilon: added to the variance, read from the model.
        momentum: running-average momentum as the model uses it
            (``new = momentum * old + (1 - momentum) * batch``); ``None`` if unknown or no
            running statistics.
        mixes_channels: statistics pool several channels (GroupNorm with groups of > 1 channel,
            LayerNorm): removing one channel changes the others.
        num_groups: channel groups of a batch-statistics norm (``C`` for InstanceNorm, 1 for
            LayerNorm); ``None`` for running-statistics norms.
    """

    id: Path
    group: str
    scale: Path | None
    shift: Path | None
    mean: Path | None
    var: Path | None
    epsilon: float
    momentum: float | None = None
    mixes_channels: bool = False
    num_groups: int | None = None


@dataclass(frozen=True)
class Layer:
    """A compute layer between two groups.

    MACs of a ``conv``/``dense`` layer are ``positions * window * w_in * w_out``; of a
    ``depthwise`` layer ``positions * window * w_in`` (its output group is its input group).
    A dense layer after a flatten of ``S`` positions has ``window = S``.

    Attributes:
        path: the kernel's path.
        kind: ``"dense"``, ``"conv"`` or ``"depthwise"``.
        in_group, out_group: group names of the input and output channels.
        positions: output spatial positions (``H_out * W_out``; 1 for dense).
        window: kernel spatial size (``kh * kw``), or flattened positions for a dense layer.
        in_positions: input spatial positions, for activation memory.
        kernel_size, stride: per spatial dim (``()`` for dense).
        padding: explicit ``(lo, hi)`` per spatial dim.
        in_spatial, out_spatial: the input / output maps' spatial sizes, e.g. ``(H, W)``.
        feature_groups: the conv's feature group count (the channel count for depthwise).
        bias: path of the bias added to its output, if any.
        norm: ``id`` of the :class:`Norm` applied directly to its output, if any.
        activation: name of the activation applied next (``"relu"``, ``"relu6"``...), if any.
    """

    path: Path
    kind: str
    in_group: str
    out_group: str
    positions: int = 1
    window: int = 1
    in_positions: int = 1
    kernel_size: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[tuple[int, int], ...] = ()
    in_spatial: tuple[int, ...] = ()
    out_spatial: tuple[int, ...] = ()
    feature_groups: int = 1
    bias: Path | None = None
    norm: Path | None = None
    activation: str | None = None


@dataclass(frozen=True)
class Op:
    """One step of the program, over value ids (value 0 is the model input).

    Attributes:
        kind: one of :data:`OP_KINDS`.
        inputs: value ids read.
        output: value id written.
        ref: the layer's kernel path (``layer``) or the norm's id (``norm``).
        group: channel group of the output value.
        spatial: spatial dims of the output value.
        attrs: sorted ``(key, value)`` pairs, values hashable (see :mod:`subnets.graph.program`).
    """

    kind: str
    inputs: tuple[int, ...]
    output: int
    ref: Path | None = None
    group: str | None = None
    spatial: tuple[int, ...] = ()
    attrs: tuple = ()

    def attr(self, key: str, default: Any = None) -> Any:
        """The value of attribute ``key``."""
        return dict(self.attrs).get(key, default)


@dataclass(frozen=True)
class ChannelGraph:
    """The channel groups of a network, its layers, norms, program and array shapes.

    Attributes:
        groups: the channel groups.
        layers: compute layers in execution order.
        norms: norm layers in execution order.
        program: the ops in execution order (see :func:`subnets.graph.run`); ``()`` when the
            graph was declared by hand without one.
        shapes: ``(path, shape)`` of every array of the variables at full size.
        input_shape: one example's shape without the batch axis.
    """

    groups: tuple[Group, ...]
    layers: tuple[Layer, ...] = ()
    norms: tuple[Norm, ...] = ()
    program: tuple[Op, ...] = ()
    shapes: tuple[tuple[Path, tuple[int, ...]], ...] = ()
    input_shape: tuple[int, ...] = ()
    _index: dict[str, Group] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, Group] = {}
        for g in self.groups:
            if g.name in index:
                raise ValueError(f"channel graph: duplicate group name {g.name!r}")
            if g.size < 1:
                raise ValueError(f"channel graph: group {g.name!r} has size {g.size}")
            for m in g.members:
                if m.role not in ROLES:
                    raise ValueError(f"group {g.name!r}: member {'/'.join(m.path)} has role "
                                     f"{m.role!r}, expected one of {ROLES}")
                if m.axis < 0 or m.spatial < 1:
                    raise ValueError(f"group {g.name!r}: member {'/'.join(m.path)} has axis "
                                     f"{m.axis}, spatial {m.spatial}")
            index[g.name] = g
        for layer in self.layers:
            if layer.kind not in LAYER_KINDS:
                raise ValueError(f"layer {'/'.join(layer.path)} has kind {layer.kind!r}, "
                                 f"expected one of {LAYER_KINDS}")
            for name in (layer.in_group, layer.out_group):
                if name not in index:
                    raise ValueError(f"layer {'/'.join(layer.path)} names unknown group {name!r}")
        for norm in self.norms:
            if norm.group not in index:
                raise ValueError(f"norm {'/'.join(norm.id)} names unknown group {norm.group!r}")
        for op in self.program:
            if op.kind not in OP_KINDS:
                raise ValueError(f"program op {op.kind!r} unknown; expected one of {OP_KINDS}")
            if op.group is not None and op.group not in index:
                raise ValueError(f"program op {op.kind} names unknown group {op.group!r}")
        object.__setattr__(self, "_index", index)

    def __getitem__(self, name: str) -> Group:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"no channel group {name!r}; groups are {list(self._index)}") from None

    def __iter__(self) -> Iterator[Group]:
        return iter(self.groups)

    @property
    def free(self) -> tuple[Group, ...]:
        """Groups whose width may change."""
        return tuple(g for g in self.groups if not g.fixed)

    @property
    def sizes(self) -> dict[str, int]:
        """Full width of every free group."""
        return {g.name: g.size for g in self.free}

    def full_widths(self) -> dict[str, int]:
        """The widths of the unpruned network (same as :attr:`sizes`)."""
        return dict(self.sizes)

    def check_widths(self, widths: Mapping[str, Any], *, allow_partial: bool = True) -> None:
        """Raise ValueError naming the group whose width is unknown or out of range."""
        for name, w in widths.items():
            g = self[name] if name in self._index else None
            if g is None:
                raise ValueError(f"widths name unknown group {name!r}; free groups: "
                                 f"{[x.name for x in self.free]}")
            w = _checks.width(w, g.size, name)
            if g.fixed and int(w) != g.size:
                raise ValueError(f"group {name!r} is fixed at {g.size}, got width {w}")
            if isinstance(w, int) and not 1 <= w <= g.size:
                raise ValueError(f"width {w} for group {name!r} outside [1, {g.size}]")
        if not allow_partial:
            missing = [g.name for g in self.free if g.name not in widths]
            if missing:
                raise ValueError(f"widths missing groups {missing}")

    def widths_of(self, variables: Mapping) -> dict[str, int]:
        """Infer every free group's width from the arrays' shapes."""
        out = {}
        for g in self.free:
            m = g.members[0]
            out[g.name] = int(get_path(variables, m.path).shape[m.axis]) // m.spatial
        return out

    def validate(self, variables: Mapping, *, widths: Mapping[str, int] | None = None) -> None:
        """Check the variables against the graph: members, sizes, the set of arrays, dtypes.

        Every member must exist with its group's size; when the graph records the arrays
        (:attr:`shapes`, as traced graphs do), the variables must hold exactly those arrays
        (an extra or a missing leaf is an error); every array must have a floating dtype.

        Args:
            variables: the variables tree.
            widths: expected widths of free groups (default: each group's full size).

        Raises:
            ValueError: naming the first path/axis whose size disagrees, a missing path, an
                array the graph does not know, or a non-floating array (path, expected and
                found dtype).

        Example:
            >>> import numpy as np
            >>> g = ChannelGraph(groups=(
            ...     Group("h", 2, (Member(("params", "d", "bias"), 0, role="bias"),)),),
            ...     shapes=((("params", "d", "bias"), (2,)),))
            >>> g.validate({"params": {"d": {"bias": np.zeros(2, np.float32)}}})
            >>> try:
            ...     g.validate({"params": {"d": {"bias": np.zeros(2, np.float32),
            ...                                  "extra": np.zeros(1)}}})
            ... except ValueError as e:
            ...     print(str(e).split(" (")[0])
            params/d/extra: an array the graph does not know
        """
        widths = dict(widths or {})
        _check_dtypes(variables)
        for g in self.groups:
            expect = widths.get(g.name, g.size)
            for m in g.members:
                try:
                    arr = get_path(variables, m.path)
                except KeyError as e:
                    raise ValueError(f"group {g.name!r}: {e.args[0]}") from None
                shape = getattr(arr, "shape", None)
                if shape is None or m.axis >= len(shape):
                    raise ValueError(f"group {g.name!r}: {'/'.join(m.path)} has shape {shape}, "
                                     f"no axis {m.axis}")
                if shape[m.axis] != expect * m.spatial:
                    detail = f" (= {m.spatial} positions x {expect})" if m.spatial > 1 else ""
                    raise ValueError(
                        f"group {g.name!r}: {'/'.join(m.path)} axis {m.axis} has size "
                        f"{shape[m.axis]}, expected {expect * m.spatial}{detail}; shape {shape}")
        _check_leaf_set(variables, self.shapes)

    def members_by_path(self) -> dict[Path, list[tuple[Group, Member]]]:
        """Map every array path to the (group, member) pairs that touch it."""
        out: dict[Path, list[tuple[Group, Member]]] = {}
        for g in self.groups:
            for m in g.members:
                out.setdefault(m.path, []).append((g, m))
        return out

    # ----------------------------------------------------------------- structural queries
    def layer(self, path: Path) -> Layer:
        """The layer whose kernel is at ``path``."""
        for layer in self.layers:
            if layer.path == tuple(path):
                return layer
        raise KeyError(f"no layer with kernel {'/'.join(path)}; layers are "
                       f"{['/'.join(x.path) for x in self.layers]}")

    def norm(self, id: Path) -> Norm:  # noqa: A002 - the field's name
        """The norm with ``id``."""
        for norm in self.norms:
            if norm.id == tuple(id):
                return norm
        raise KeyError(f"no norm {'/'.join(id)}; norms are {['/'.join(n.id) for n in self.norms]}")

    def producers(self, group: str) -> tuple[Layer, ...]:
        """Layers writing ``group`` (depthwise layers only pass it through)."""
        self[group]
        return tuple(x for x in self.layers if x.out_group == group and x.kind != "depthwise")

    def consumers(self, group: str) -> tuple[Layer, ...]:
        """Layers reading ``group``, depthwise layers included."""
        self[group]
        return tuple(x for x in self.layers if x.in_group == group)

    def norm_of(self, layer_path: Path) -> Norm | None:
        """The norm applied directly to the output of the layer at ``layer_path``."""
        layer = self.layer(layer_path)
        return None if layer.norm is None else self.norm(layer.norm)

    def members(self, group: str, *roles: str) -> tuple[Member, ...]:
        """Members of ``group`` with one of ``roles`` (all members when none given)."""
        for r in roles:
            if r not in ROLES:
                raise ValueError(f"unknown role {r!r}; roles are {ROLES}")
        ms = self[group].members
        return tuple(m for m in ms if not roles or m.role in roles)

    def shape_of(self, path: Path) -> tuple[int, ...]:
        """Full-size shape of the array at ``path``."""
        for p, s in self.shapes:
            if p == tuple(path):
                return s
        raise KeyError(f"graph records no array at {'/'.join(path)}")

    def take(self, variables: Mapping, indices: Mapping[str, Any]) -> dict:
        """Gather ``indices`` of every named group's channels in every member.

        See :func:`subnets.graph.query.take`.
        """
        from subnets.graph.query import take

        return take(self, variables, indices)

    def to_dict(self) -> dict:
        """A JSON-safe dict (see :func:`subnets.graph.serial.to_dict`)."""
        from subnets.graph.serial import to_dict

        return to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> ChannelGraph:
        """The graph saved by :meth:`to_dict`, validated (ValueError on a malformed dict)."""
        from subnets.graph.serial import from_dict

        return from_dict(d)


def get_path(tree: Mapping, path: Path) -> Any:
    """Return ``tree[path[0]][path[1]]...`` with an error naming the missing key."""
    node: Any = tree
    for i, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            raise KeyError(f"no array at {'/'.join(path)} (missing {key!r} under "
                           f"{'/'.join(path[:i]) or 'the root'})")
        node = node[key]
    return node


def _check_dtypes(variables: Mapping) -> None:
    """Every leaf an array of a floating dtype."""
    import jax.numpy as jnp

    for path, leaf in leaf_paths(variables):
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            raise ValueError(f"{'/'.join(path)}: expected an array of dtype floating, found "
                             f"{type(leaf).__name__}")
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"{'/'.join(path)}: expected dtype floating (float32, bfloat16, "
                             f"...), found {dtype}")


def _check_leaf_set(variables: Mapping, shapes: tuple[tuple[Path, tuple[int, ...]], ...]) -> None:
    """The leaves are exactly the arrays the graph records (when it records any)."""
    if not shapes:
        return
    known = {tuple(p) for p, _ in shapes}
    seen = set()
    for path, _ in leaf_paths(variables):
        if path not in known:
            raise ValueError(f"{'/'.join(path)}: an array the graph does not know (it records "
                             f"{len(known)} arrays, e.g. {'/'.join(shapes[0][0])})")
        seen.add(path)
    missing = [p for p, _ in shapes if tuple(p) not in seen]
    if missing:
        raise ValueError(f"{'/'.join(missing[0])}: missing; the graph records this array "
                         f"({len(missing)} of its {len(known)} arrays are absent)")


def set_paths(tree: Mapping, updates: Mapping[Path, Any]) -> dict:
    """Return a copy of ``tree`` (dicts copied along changed paths) with ``updates`` applied."""
    def rebuild(node: Mapping, prefix: Path) -> dict:
        out = {}
        for k, v in node.items():
            p = prefix + (k,)
            if p in updates:
                out[k] = updates[p]
            elif isinstance(v, Mapping) and any(u[: len(p)] == p for u in updates):
                out[k] = rebuild(v, p)
            else:
                out[k] = v
        return out

    for p in updates:
        get_path(tree, p)
    return rebuild(tree, ())


def leaf_paths(tree: Mapping, prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Yield ``(path, leaf)`` in insertion order (which, for Flax, is definition order)."""
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from leaf_paths(v, prefix + (k,))
        else:
            yield prefix + (k,), v
