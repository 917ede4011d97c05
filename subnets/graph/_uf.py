"""Union-find over (value, axis) and the block structure of a reshape."""

from __future__ import annotations


class UnionFind:
    """Elements are axes; each has a size; roots carry flags (``channel``, ...)."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.flags: list[set[str]] = []
        self.nodes: dict[tuple[int, int], int] = {}

    def fresh(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.flags.append(set())
        return len(self.parent) - 1

    def node(self, value: int, axis: int, size: int) -> int:
        key = (value, axis)
        n = self.nodes.get(key)
        if n is None:
            n = self.nodes[key] = self.fresh(size)
        return n

    def bind(self, value: int, axis: int, element: int) -> None:
        """Make ``(value, axis)`` the given element (e.g. a reshape's merged axis)."""
        if (value, axis) in self.nodes:
            self.union(self.nodes[(value, axis)], element)
        else:
            self.nodes[(value, axis)] = element

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.flags[ra] |= self.flags[rb]
        return ra

    def flag(self, x: int, name: str) -> None:
        self.flags[self.find(x)].add(name)

    def has(self, x: int, name: str) -> bool:
        return name in self.flags[self.find(x)]


def reshape_blocks(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    """Pair minimal runs of axes of shapes ``a`` and ``b`` with equal products.

    Equal sizes pair one-to-one first (so size-1 axes that stay put stay paired); a size-1
    axis with no partner forms a block alone. ``([i, j], [k])`` is a merge, ``([i], [k, l])`` a
    split.
    """
    i = j = 0
    out: list[tuple[list[int], list[int]]] = []
    while i < len(a) or j < len(b):
        if i < len(a) and j < len(b) and a[i] == b[j]:
            out.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        if i < len(a) and a[i] == 1:
            out.append(([i], []))
            i += 1
            continue
        if j < len(b) and b[j] == 1:
            out.append(([], [j]))
            j += 1
            continue
        if i >= len(a) or j >= len(b):
            raise ValueError(f"reshape {a} -> {b}: sizes do not match")
        ii, jj, pa, pb = [i], [j], a[i], b[j]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb:
                if i >= len(a):
                    raise ValueError(f"reshape {a} -> {b}: sizes do not match")
                ii.append(i)
                pa *= a[i]
                i += 1
            else:
                if j >= len(b):
                    raise ValueError(f"reshape {a} -> {b}: sizes do not match")
                jj.append(j)
                pb *= b[j]
                j += 1
        out.append((ii, jj))
    return out
