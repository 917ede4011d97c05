"""PNG figures: the matplotlib boilerplate the pipelines and benchmarks share.

:func:`figure` gives one labelled, gridded axes; :func:`panels` a grid of axes the caller labels.

Matplotlib is an optional dependency (the ``plot`` extra): it is imported only when a figure is
made, always with the ``Agg`` backend, so nothing needs a display. Without it a figure raises
:class:`PlotExtraMissing` (an ``ImportError`` naming ``pip install 'subnets[plot]'``); a PNG that
is only a side product goes through :func:`side_plot`, which says once that it skipped it.

Example:
    >>> import os, tempfile
    >>> from subnets._plot import figure
    >>> path = os.path.join(tempfile.mkdtemp(), "acc.png")
    >>> with figure(path, xlabel="MACs", ylabel="accuracy (%)", title="demo") as ax:
    ...     _ = ax.plot([1, 2], [50, 60], "o-", label="a")
    >>> os.path.getsize(path) > 0
    True
    >>> from subnets._plot import accuracy_vs_macs, panels
    >>> accuracy_vs_macs(path, {"levels": [(1e6, 90.0, "a"), (2e6, 95.0)]}, base=(2e6, 96.0))
    >>> os.path.getsize(path) > 0
    True
    >>> with panels(path, 2, 3, title="grid") as axes:
    ...     axes.shape
    (2, 3)
    >>> side_plot(accuracy_vs_macs, path, {"a": [(1e6, 90.0)]}) == path
    True

References:
    Matplotlib, "Usage guide: backends" (the non-interactive ``Agg`` backend).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

INSTALL = "pip install 'subnets[plot]'"


class PlotExtraMissing(ModuleNotFoundError):
    """Matplotlib, which every figure needs, is not installed (``name`` is ``"matplotlib"``)."""


_said_skipped = False


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


def accuracy_vs_macs(path: str | os.PathLike, curves: dict[str, list[tuple]], *,
                     title: str = "", references: dict[str, list[tuple]] | None = None,
                     base: tuple | None = None) -> None:
    """Accuracy (%) against MACs, one line per curve, y-range fitted to the points.

    Args:
        path: PNG to write.
        curves: ``{label: [(macs, accuracy_percent[, point_label]), ...]}``.
        title: figure title.
        references: dashed grey curves of the same form (e.g. separately trained models).
        base: ``(macs, accuracy_percent)`` of the base model, drawn as a star.

    The y-axis spans only the plotted accuracies (plus a margin), so levels a point apart
    stay distinguishable instead of being squeezed against a 0-100 range.
    """
    ys: list[float] = []
    with figure(path, xlabel="MACs", ylabel="accuracy (%)", title=title) as ax:
        for (label, pts), mark in zip(curves.items(), "os^vD<>", strict=False):
            pts = sorted(pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], mark + "-", label=label)
            for p in pts:
                if len(p) > 2:
                    ax.annotate(str(p[2]), (p[0], p[1]), fontsize=7, xytext=(3, -9),
                                textcoords="offset points")
            ys += [p[1] for p in pts]
        for label, pts in (references or {}).items():
            pts = sorted(pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "x--", color="grey", label=label)
            ys += [p[1] for p in pts]
        if base is not None:
            ax.plot([base[0]], [base[1]], "*", markersize=12, color="black", label="base model")
            ys.append(base[1])
        if ys:
            lo, hi = min(ys), max(ys)
            pad = max(0.5, 0.15 * (hi - lo))
            ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise PlotExtraMissing(f"plotting needs matplotlib, which is not installed: {INSTALL} "
                               "adds it", name="matplotlib") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def available() -> bool:
    """Whether figures can be made (matplotlib imports)."""
    try:
        _pyplot()
    except PlotExtraMissing:
        return False
    return True


def side_plot(write: Callable[..., Any], path: str | os.PathLike, *args: Any,
              **kwargs: Any) -> str | None:
    """``write(path, *args, **kwargs)`` for a PNG that is a side product of a command.

    Returns:
        ``str(path)``, or None when matplotlib is missing: the PNG is skipped and one line on
        stderr (once per process) says so and names the ``pip install`` that adds it.
    """
    global _said_skipped
    try:
        write(path, *args, **kwargs)
    except PlotExtraMissing:
        if not _said_skipped:
            _said_skipped = True
            print(f"skipped {path} (and any further PNG): matplotlib is not installed; "
                  f"{INSTALL} adds the plots", file=sys.stderr, flush=True)
        return None
    return str(path)


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
