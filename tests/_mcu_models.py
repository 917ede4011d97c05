"""Small programs in the graph contract's shape (Op/Layer/Norm), for the int8 exporter tests.

Until the traced graph lands on this branch these stand in for ``trace`` output: a DS-CNN-like
net (stem conv, depthwise, pointwise, mean, dense) and a residual net with max pooling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np


@dataclass(frozen=True)
class Op:
    kind: str
    inputs: tuple
    output: int
    ref: tuple | None = None
    group: str | None = None
    spatial: tuple = ()
    attrs: tuple = ()


@dataclass(frozen=True)
class Layer:
    path: tuple
    kind: str
    in_group: str
    out_group: str
    kernel_size: tuple = ()
    stride: tuple = ()
    padding: tuple = ()
    in_spatial: tuple = ()
    out_spatial: tuple = ()
    feature_groups: int = 1
    bias: tuple | None = None
    norm: tuple | None = None
    activation: str | None = None


@dataclass(frozen=True)
class Norm:
    id: tuple
    group: str
    scale: tuple | None
    shift: tuple | None
    mean: tuple | None
    var: tuple | None
    epsilon: float = 1e-3


@dataclass
class Graph:
    groups: tuple
    layers: dict
    norms: dict
    program: tuple
    input_shape: tuple
    axes: dict = field(default_factory=dict)  # array path -> ((axis, group), ...)

    def layer(self, path):
        return self.layers[tuple(path)]

    def norm(self, nid):
        return self.norms[tuple(nid)]

    @property
    def free(self):
        return tuple(g for g in self.groups if not g.fixed)


class Family:
    """Just what nested_c reads: net.graph, variables, levels, level_variables(i)."""

    def __init__(self, graph, variables, levels, level_stats=None):
        self.net = SimpleNamespace(graph=graph, name="test")
        self.variables, self.levels, self._stats = variables, levels, level_stats

    def level_variables(self, i):
        full = {g.name: g.size for g in self.net.graph.groups}
        w = {**full, **self.levels[i]}
        out = {}
        for coll, tree in self.variables.items():
            out[coll] = {}
            for mod, leaves in tree.items():
                out[coll][mod] = {}
                for leaf, arr in leaves.items():
                    arr = np.asarray(arr)
                    if self._stats is not None and coll == "batch_stats":
                        arr = np.asarray(self._stats[i][mod][leaf])
                    for axis, g, spatial in self.net.graph.axes.get((coll, mod, leaf), ()):
                        if spatial > 1:
                            shp = arr.shape
                            arr = arr.reshape(shp[:axis] + (spatial, shp[axis] // spatial)
                                              + shp[axis + 1:])
                            arr = np.take(arr, range(w[g]), axis=axis + 1)
                            arr = arr.reshape(shp[:axis] + (-1,) + shp[axis + 1:])
                        else:
                            arr = np.take(arr, range(w[g]), axis=axis)
                    out[coll][mod][leaf] = arr
        return out


def _g(name, size, fixed=False):
    return SimpleNamespace(name=name, size=size, fixed=fixed)


class _Builder:
    def __init__(self, rng, input_shape, in_c):
        self.rng, self.ops, self.layers, self.norms, self.axes = rng, [], {}, {}, {}
        self.params, self.stats, self.v = {}, {}, 0
        self.input_shape = input_shape

    def _new(self):
        self.v += 1
        return self.v

    def conv(self, name, x, kind, gin, gout, cin, cout, k, s, pad, ins, outs, norm=True,
             act="relu", bias=False, flatten=1):
        r = self.rng
        if kind == "dense":
            kern = r.normal(0, 1 / np.sqrt(cin * flatten), (cin * flatten, cout))
            self.axes[("params", name, "kernel")] = ((0, gin, flatten), (1, gout, 1))
        elif kind == "depthwise":
            kern = r.normal(0, 1 / 3, (k[0], k[1], 1, cout))
            self.axes[("params", name, "kernel")] = ((3, gout, 1),)
        else:
            kern = r.normal(0, 1 / np.sqrt(cin * k[0] * k[1]), (k[0], k[1], cin, cout))
            self.axes[("params", name, "kernel")] = ((2, gin, 1), (3, gout, 1))
        self.params[name] = {"kernel": kern.astype(np.float32)}
        bpath = None
        if bias:
            self.params[name]["bias"] = r.normal(0, 0.1, cout).astype(np.float32)
            self.axes[("params", name, "bias")] = ((0, gout, 1),)
            bpath = ("params", name, "bias")
        path = ("params", name, "kernel")
        self.layers[path] = Layer(path, kind, gin, gout, k, s, pad, ins, outs, bias=bpath)
        y = self._new()
        self.ops.append(Op("layer", (x,), y, path, gout, outs))
        if norm:
            nm = f"{name}_norm"
            scale = r.uniform(0.5, 1.5, cout)
            scale[0] = -0.7  # a negative gain: the level's sign flip
            self.params[nm] = {"scale": scale.astype(np.float32),
                               "bias": r.normal(0, 0.2, cout).astype(np.float32)}
            self.stats[nm] = {"mean": r.normal(0, 0.3, cout).astype(np.float32),
                              "var": r.uniform(0.5, 2.0, cout).astype(np.float32)}
            for coll, leaf in (("params", "scale"), ("params", "bias"),
                               ("batch_stats", "mean"), ("batch_stats", "var")):
                self.axes[(coll, nm, leaf)] = ((0, gout, 1),)
            nid = ("params", nm)
            self.norms[nid] = Norm(nid, gout, ("params", nm, "scale"), ("params", nm, "bias"),
                                   ("batch_stats", nm, "mean"), ("batch_stats", nm, "var"))
            z = self._new()
            self.ops.append(Op("norm", (y,), z, nid, gout, outs))
            y = z
        if act:
            z = self._new()
            self.ops.append(Op("act", (y,), z, None, gout, outs, (("name", act),)))
            y = z
        return y

    def op(self, kind, ins, group, spatial, attrs=()):
        y = self._new()
        self.ops.append(Op(kind, tuple(ins), y, None, group, spatial, attrs))
        return y

    def family(self, groups, levels, per_level_stats=False):
        graph = Graph(tuple(groups), self.layers, self.norms, tuple(self.ops),
                      self.input_shape, self.axes)
        variables = {"params": self.params, "batch_stats": self.stats}
        stats = None
        if per_level_stats:
            stats = [{m: {k: v * (1 + 0.1 * i) for k, v in d.items()}
                      for m, d in self.stats.items()} for i in range(len(levels))]
        return Family(graph, variables, levels, stats)


def dscnn(seed=0, per_level_stats=False, k=1):
    """Stem conv 3x3/(2,1) SAME, depthwise 3x3 SAME, pointwise, depthwise, pointwise, mean,
    dense with bias: the DS-CNN pattern at a tiny size."""
    b = _Builder(np.random.default_rng(seed), (7, 5, 1), 1)
    pad = ((1, 1), (1, 1))
    c0, c1, c2 = 8 * k, 10 * k, 12 * k
    h = b.conv("stem", 0, "conv", "in", "g0", 1, c0, (3, 3), (2, 1), ((1, 1), (1, 1)), (7, 5),
               (4, 5))
    h = b.conv("dw0", h, "depthwise", "g0", "g0", c0, c0, (3, 3), (1, 1), pad, (4, 5), (4, 5))
    h = b.conv("pw0", h, "conv", "g0", "g1", c0, c1, (1, 1), (1, 1), ((0, 0), (0, 0)), (4, 5),
               (4, 5))
    h = b.conv("dw1", h, "depthwise", "g1", "g1", c1, c1, (3, 3), (1, 1), pad, (4, 5), (4, 5),
               act="relu6")
    h = b.conv("pw1", h, "conv", "g1", "g2", c1, c2, (1, 1), (1, 1), ((0, 0), (0, 0)), (4, 5),
               (4, 5))
    h = b.op("mean", [h], "g2", ())
    h = b.conv("classifier", h, "dense", "g2", "out", c2, 4, (), (), (), (), (), norm=False,
               act=None, bias=True)
    b.op("output", [h], "out", ())
    groups = [_g("in", 1, True), _g("g0", c0), _g("g1", c1), _g("g2", c2), _g("out", 4, True)]
    levels = [{"g0": 3 * k, "g1": 4 * k, "g2": 5 * k}, {"g0": 5 * k, "g1": 6 * k, "g2": 8 * k},
              {"g0": 6 * k, "g1": 8 * k, "g2": 10 * k}, {"g0": c0, "g1": c1, "g2": c2}]
    return b.family(groups, levels, per_level_stats)


def resnet(seed=1, per_level_stats=False):
    """Conv, max pool 2x2/2, a residual block (conv-relu-conv + identity add, relu), mean,
    flatten-free dense; and a CNN tail: conv, flatten, dense."""
    b = _Builder(np.random.default_rng(seed), (8, 8, 2), 2)
    same = ((1, 1), (1, 1))
    h = b.conv("stem", 0, "conv", "in", "g0", 2, 8, (3, 3), (1, 1), same, (8, 8), (8, 8))
    h = b.op("max_pool", [h], "g0", (4, 4),
             (("padding", ((0, 0), (0, 0))), ("stride", (2, 2)), ("window", (2, 2))))
    r = b.conv("b0c0", h, "conv", "g0", "g1", 8, 6, (3, 3), (1, 1), same, (4, 4), (4, 4))
    r = b.conv("b0c1", r, "conv", "g1", "g0", 6, 8, (3, 3), (1, 1), same, (4, 4), (4, 4),
               act=None)
    h = b.op("add", [h, r], "g0", (4, 4))
    h = b.op("act", [h], "g0", (4, 4), (("name", "relu"),))
    h = b.conv("down", h, "conv", "g0", "g2", 8, 6, (3, 3), (2, 2), ((0, 1), (0, 1)), (4, 4),
               (2, 2))
    h = b.op("flatten", [h], "g2", ())
    h = b.conv("dense", h, "dense", "g2", "g3", 6, 7, (), (), (), (), (), flatten=4)
    h = b.conv("classifier", h, "dense", "g3", "out", 7, 3, (), (), (), (), (), norm=False,
               act=None, bias=True)
    b.op("output", [h], "out", ())
    groups = [_g("in", 2, True), _g("g0", 8), _g("g1", 6), _g("g2", 6), _g("g3", 7),
              _g("out", 3, True)]
    levels = [{"g0": 4, "g1": 3, "g2": 3, "g3": 4}, {"g0": 8, "g1": 6, "g2": 6, "g3": 7}]
    return b.family(groups, levels, per_level_stats)


def dscnn_s(seed=0, blocks=4, c=64, input_shape=(49, 10, 1), classes=12, per_level_stats=False):
    """The DS-CNN-S shape (Hello Edge): stem 10x4/2 SAME to 25x5 x 64, 4 x (dw 3x3 + pw 64),
    mean, dense; 4 uniform levels (1/4 .. full)."""
    b = _Builder(np.random.default_rng(seed), input_shape, 1)
    h_in, w_in = input_shape[:2]
    oh, ow = -(-h_in // 2), -(-w_in // 2)
    ph, pw = max((oh - 1) * 2 + 10 - h_in, 0), max((ow - 1) * 2 + 4 - w_in, 0)
    h = b.conv("stem", 0, "conv", "in", "g0", 1, c, (10, 4), (2, 2),
               ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), (h_in, w_in), (oh, ow))
    same = ((1, 1), (1, 1))
    for i in range(blocks):
        h = b.conv(f"dw{i}", h, "depthwise", f"g{i}", f"g{i}", c, c, (3, 3), (1, 1), same,
                   (oh, ow), (oh, ow))
        h = b.conv(f"pw{i}", h, "conv", f"g{i}", f"g{i + 1}", c, c, (1, 1), (1, 1),
                   ((0, 0), (0, 0)), (oh, ow), (oh, ow))
    h = b.op("mean", [h], f"g{blocks}", ())
    h = b.conv("classifier", h, "dense", f"g{blocks}", "out", c, classes, (), (), (), (), (),
               norm=False, act=None, bias=True)
    b.op("output", [h], "out", ())
    groups = [_g("in", 1, True), *[_g(f"g{i}", c) for i in range(blocks + 1)],
              _g("out", classes, True)]
    levels = [{f"g{i}": c * q // 4 for i in range(blocks + 1)} for q in (1, 2, 3, 4)]
    return b.family(groups, levels, per_level_stats)
