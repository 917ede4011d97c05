"""PNG figures: the matplotlib boilerplate the pipelines and benchmarks share.

:func:`figure` gives one labelled, gridded axes; :func:`panels` a grid of axes the caller labels.

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
    >>> from subnets._plot import panels
    >>> with panels(path, 2, 3, title="grid") as axes:
    ...     axes.shape
    (2, 3)

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
    plt = _pyplot()
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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def panels(path: str | os.PathLike, nrows: int = 1, ncols: int = 1, *, title: str = "",
           figsize: tuple[float, float] | None = None, dpi: int = 110) -> Iterator[Any]:
    """Yield a ``(nrows, ncols)`` array of ``Axes``; on exit grid them, add legends where
    something is labelled, lay out and save to ``path``. The caller sets titles and labels."""
    plt = _pyplot()
    figsize = figsize or (5 * ncols, 3.6 * nrows)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    try:
        yield axes
        for ax in axes.flat:
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[1]:
                ax.legend(fontsize=8)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
