"""The one argument order (graph or model first, then variables), with the old order deprecated.

Functions that used to take ``(variables, graph, ...)`` now take ``(graph, variables, ...)``.
The old order is still recognised by type (a Mapping first and a ChannelGraph or model second)
and swapped with a :class:`DeprecationWarning` naming the new order.

Example:
    >>> import warnings
    >>> from subnets.graph import ChannelGraph, Group, Member
    >>> g = ChannelGraph((Group("h", 2, (Member(("k",), 0),)),))
    >>> graph_first(g, {"k": 0}, "f") == (g, {"k": 0})
    True
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     out = graph_first({"k": 0}, g, "f")
    >>> out == (g, {"k": 0}), w[0].category.__name__
    (True, 'DeprecationWarning')

References:
    issue 10, Deliver 6 (one argument order).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from subnets.graph import ChannelGraph


def as_graph(obj: Any) -> ChannelGraph | None:
    """``obj`` if it is a ChannelGraph, ``obj.graph`` for a model, else None."""
    if isinstance(obj, ChannelGraph):
        return obj
    graph = getattr(obj, "graph", None)
    return graph if isinstance(graph, ChannelGraph) else None


def graph_first(first: Any, second: Any, name: str, *, stacklevel: int = 3) -> tuple[Any, Any]:
    """``(graph_or_model, variables)`` from either order; the old one warns.

    Raises:
        TypeError: neither argument is a ChannelGraph (or a model with one).
    """
    if isinstance(first, Mapping) and as_graph(second) is not None:
        warnings.warn(f"{name}(variables, graph, ...) is deprecated; call "
                      f"{name}(graph, variables, ...) (graph or model first)",
                      DeprecationWarning, stacklevel=stacklevel)
        return second, first
    if as_graph(first) is None:
        raise TypeError(f"{name}: the first argument must be a ChannelGraph or a model with "
                        f"a .graph, got {type(first).__name__}")
    return first, second
