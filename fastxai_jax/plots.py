"""Matplotlib plots of evaluation curves (headless: the Agg backend)."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np


def plot_curves(
    path: str | pathlib.Path,
    curves: dict[str, Any],
    title: str,
    *,
    fractions: Any = None,
    xlabel: str = "fraction of features perturbed",
    ylabel: str = "score",
) -> pathlib.Path:
    """Saves one line per named curve to a PNG.

    Args:
      path: output file (``.png``); parent folders are created.
      curves: ``{name: [T] or [B, T] array}``; a ``[B, T]`` curve is averaged
        over inputs (the dataset curve).
      title: plot title.
      fractions: ``[T]`` x values (default ``linspace(0, 1, T)``).
      xlabel: x-axis label.
      ylabel: y-axis label.

    Returns:
      The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("curves must name at least one curve")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for name, curve in curves.items():
        values = np.asarray(curve, np.float64)
        if values.ndim == 2:
            values = values.mean(axis=0)
        if values.ndim != 1:
            raise ValueError(f"curve {name!r} must be [T] or [B, T]; got shape {values.shape}")
        xs = np.linspace(0.0, 1.0, values.shape[0]) if fractions is None else np.asarray(fractions)
        ax.plot(xs, values, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
