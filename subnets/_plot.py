"""One labelled, gridded PNG figure: the matplotlib boilerplate the pipelines and benchmarks share.

Matplotlib is imported only when a figure is made (it is an optional dependency) and always
with the ``Agg`` backend, so nothing needs a display.

Example:
    >>> import os, tempfile
    >>> from subnets._plot import figure
    >>> path = os.path.join(tempfile.mkdtemp(), "acc.png")
    >>> with figure(path, xlabel="MACs", ylabel="accuracy (%)", title="demo") as ax:
    ...     _ = ax.plot([1, 2], [50, 60], "o-", label="a")
    >>> os.path.getsize(path) > 0
    True

References:
    Matplotlib, "Usage guide: backends" (the non-interactive ``Agg`` backend).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def figure(path: str | os.PathLike, *, xlabel: str, ylabel: str, title: str = "",
           figsize: tuple[float, float] = (5, 3.5), dpi: int = 120) -> Iterator[Any]:
    """Yield one ``Axes``; on exit label it, add a grid and legend, and save it to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    try:
        yield ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
