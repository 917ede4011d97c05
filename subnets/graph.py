"""The channel graph: the one structural fact every structured algorithm reads.

A network's parameters are a plain nested dict of arrays. Several axes of several arrays index
the *same* channels: a conv's output axis, its bias, the norm after it (scale, shift, running
statistics), the next layer's input axis, a depthwise conv's channel axis, every branch that a
residual add joins. A :class:`Group` lists those ``(path, axis)`` members; a
:class:`ChannelGraph` is the tuple of groups plus the compute layers that connect them (for the
cost model).

Where a flatten turns an ``H x W x C`` map into a vector, the consuming dense kernel's input axis
has length ``H*W*C`` laid out row-major as ``(H*W, C)``; the member records ``spatial=H*W`` and
every algorithm views that axis as ``(spatial, C)``.

Example:
    >>> import numpy as np
    >>> g = ChannelGraph(groups=(
    ...     Group("in", 4, (Member(("params", "d0", "kernel"), 0),), fixed=True),
    ...     Group("h", 8, (Member(("params", "d0", "kernel"), 1),
    ...                    Member(("params", "d0", "bias"), 0),
    ...                    Member(("params", "d1", "kernel"), 0))),
    ...     Group("out", 2, (Member(("params", "d1", "kernel"), 1),
    ...                      Member(("params", "d1", "bias"), 0)), fixed=True)))
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


@dataclass(frozen=True)
class Member:
    """One axis of one array that indexes a group's channels.

    Attributes:
        path: keys from the variables root to the array, e.g. ``("params", "conv0", "kernel")``.
        axis: the axis (non-negative) that holds the channels.
        spatial: the axis is a flatten of ``(spatial, channels)`` row-major; 1 for a plain axis.
    """

    path: Path
    axis: int
    spatial: int = 1


@dataclass(frozen=True)
class Group:
    """Channels that must be permuted, sliced and removed together."""

    name: str
    size: int
    members: tuple[Member, ...]
    fixed: bool = False


@dataclass(frozen=True)
class Layer:
    """A compute layer between two groups, for the cost model.

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
    """

    path: Path
    kind: str
    in_group: str
    out_group: str
    positions: int = 1
    window: int = 1
    in_positions: int = 1


@dataclass(frozen=True)
class ChannelGraph:
    """The channel groups of a network and the layers between them."""

    groups: tuple[Group, ...]
    layers: tuple[Layer, ...] = ()
    _index: dict[str, Group] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, Group] = {}
        for g in self.groups:
            if g.name in index:
                raise ValueError(f"channel graph: duplicate group name {g.name!r}")
            if g.size < 1:
                raise ValueError(f"channel graph: group {g.name!r} has size {g.size}")
            index[g.name] = g
        for layer in self.layers:
            for name in (layer.in_group, layer.out_group):
                if name not in index:
                    raise ValueError(f"layer {'/'.join(layer.path)} names unknown group {name!r}")
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
        """Check that every member exists and has its group's size.

        Args:
            variables: the variables tree.
            widths: expected widths of free groups (default: each group's full size).

        Raises:
            ValueError: naming the first path/axis whose size disagrees, or a missing path.
        """
        widths = dict(widths or {})
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

    def members_by_path(self) -> dict[Path, list[tuple[Group, Member]]]:
        """Map every array path to the (group, member) pairs that touch it."""
        out: dict[Path, list[tuple[Group, Member]]] = {}
        for g in self.groups:
            for m in g.members:
                out.setdefault(m.path, []).append((g, m))
        return out


def get_path(tree: Mapping, path: Path) -> Any:
    """Return ``tree[path[0]][path[1]]...`` with an error naming the missing key."""
    node: Any = tree
    for i, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            raise KeyError(f"no array at {'/'.join(path)} (missing {key!r} under "
                           f"{'/'.join(path[:i]) or 'the root'})")
        node = node[key]
    return node


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

