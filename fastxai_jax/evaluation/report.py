"""Reports of an evaluation: JSON/CSV, Markdown tables, overlays and curve plots.

Reads what :func:`fastxai_jax.evaluation.run.evaluate_methods` returns
(``summary[method]``: metric → mean, ``"per_input"`` and cost figures;
``curves[method][kind]``: ``{"fractions", "mean"}``).
"""

from __future__ import annotations

import csv
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastxai_jax.evaluation.run import CURVES

# Paired comparisons in the report: (metric, label, +1 if higher is better).
PAIRED_METRICS = (
    ("deletion_auc", "deletion AUC", -1),
    ("patch_deletion_auc", "patch del.", -1),
    ("insertion_auc", "insertion AUC", +1),
    ("pointing_game", "pointing game", +1),
)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def write_results(out: str | pathlib.Path, summary, curves, config: dict[str, Any]) -> None:
    """Writes ``results.json``, ``results.csv`` and one PNG per curve kind into ``out``.

    Args:
      out: output directory (created).
      summary: per-method rows.
      curves: per-method mean curves.
      config: what was run (a ``Protocol`` under ``"protocol"`` is written as a dict).
    """
    from fastxai_jax.plots import plot_curves

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = _jsonable(config)
    (out / "results.json").write_text(
        json.dumps({"config": config, "methods": summary, "curves": curves}, indent=1)
    )
    scalar = {
        method: {k: v for k, v in row.items() if not isinstance(v, dict | list)}
        for method, row in summary.items()
    }
    columns = ["method"] + sorted({key for row in scalar.values() for key in row})
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for method, row in scalar.items():
            writer.writerow({"method": method, **row})
    score = config.get("protocol", {}).get("score", "prob")
    curve_score = "probability of ŷ" if score == "prob" else "top-1 agreement with ŷ"
    labels = {
        "insertion": curve_score,
        "deletion": curve_score,
        "pos": "top-1 agreement with ŷ",
        "neg": "top-1 agreement with ŷ",
    }
    for name in CURVES:
        plot_curves(
            out / f"{name}.png",
            {method: np.asarray(c[name]["mean"]) for method, c in curves.items()},
            f"{name} curve ({config.get('model', '')}, N={config.get('num', '')})",
            fractions=next(iter(curves.values()))[name]["fractions"],
            ylabel=labels[name],
        )


def read_results(out: str | pathlib.Path) -> dict[str, Any]:
    """``results.json`` of :func:`write_results` as a dict (``config``, ``methods``, ``curves``)."""
    return json.loads((pathlib.Path(out) / "results.json").read_text())


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def markdown_table(summary: dict[str, dict[str, Any]]) -> list[str]:
    """The demo's per-method table: curve AUCs, localisation, time and target passes."""
    lines = [
        "| method | insertion AUC ↑ | deletion AUC ↓ | patch ins. ↑ | patch del. ↓ "
        "| pointing game ↑ | IoU ↑ | relevance mass ↑ "
        "| ms / image | target fwd / image | target bwd / image |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, row in summary.items():
        lines.append(
            f"| {method} | {_fmt(row['insertion_auc'])} | {_fmt(row['deletion_auc'])} "
            f"| {_fmt(row.get('patch_insertion_auc', float('nan')))} "
            f"| {_fmt(row.get('patch_deletion_auc', float('nan')))} "
            f"| {_fmt(row['pointing_game'])} | {_fmt(row['iou'])} | {_fmt(row['relevance_mass'])} "
            f"| {1e3 * row['time_per_input_s']:.2f} | {row['forward_passes']} "
            f"| {row['backward_passes']} |"
        )
    return lines


def paired_lines(
    summary: dict[str, dict[str, Any]],
    learned: Sequence[str],
    peers: Sequence[str] = ("rise", "random"),
) -> list[str]:
    """Each of ``learned`` minus each of ``peers``, per image, with a 95% bootstrap
    interval: whether a difference of means is more than noise."""
    from fastxai_jax.metrics import paired_difference

    rows = []
    for name in learned:
        for peer in peers:
            if name not in summary or peer not in summary:
                continue
            cells = []
            for metric, _, _ in PAIRED_METRICS:
                a = summary[name].get("per_input", {}).get(metric)
                b = summary[peer].get("per_input", {}).get(metric)
                cells.append("–" if a is None or b is None else paired_difference(a, b).format())
            rows.append(f"| {name} − {peer} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    header = " | ".join(f"{label} {'↑' if sign > 0 else '↓'}" for _, label, sign in PAIRED_METRICS)
    return [
        "",
        "Paired differences over the same images (mean [95% bootstrap interval]); an "
        "interval that contains 0 means the two methods are not distinguishable here.",
        "",
        f"| comparison | {header} |",
        "|---|" + "---|" * len(PAIRED_METRICS),
        *rows,
    ]


def display_map(attribution: Any) -> np.ndarray:
    """Magnitude clipped at its 99th percentile: signed gradient maps stay readable."""
    magnitude = np.abs(np.asarray(attribution, np.float32))
    return np.minimum(magnitude, np.percentile(magnitude, 99))


def overlay_grid(path, images, masks, maps: dict[str, np.ndarray], rows: int = 6) -> None:
    """One figure: image + ground truth contour, then each method's map, for a few images.

    Args:
      path: output PNG.
      images: ``[N, H, W, 3]`` in ``[0, 1]``.
      masks: ``[N, H, W]`` ground truth, or ``None``.
      maps: ``{method: [N, H, W]}``.
      rows: images shown.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastxai_jax.viz import overlay

    rows = min(rows, images.shape[0])
    names = list(maps)
    fig, axes = plt.subplots(rows, len(names) + 1, figsize=(1.6 * (len(names) + 1), 1.6 * rows))
    axes = np.atleast_2d(axes)
    for r in range(rows):
        axes[r, 0].imshow(images[r])
        if masks is not None:
            axes[r, 0].contour(masks[r], levels=[0.5], colors="white", linewidths=0.8)
        for c, name in enumerate(names, start=1):
            axes[r, c].imshow(overlay(images[r], display_map(maps[name][r])))
        if r == 0:
            axes[0, 0].set_title("input + truth", fontsize=8)
            for c, name in enumerate(names, start=1):
                axes[0, c].set_title(name, fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def photo_grid(path, photos, maps: dict[str, np.ndarray], titles: Sequence[str]) -> None:
    """One figure: each photo (titled) and each method's overlay on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastxai_jax.viz import overlay

    methods = list(maps)
    fig, axes = plt.subplots(len(photos), len(methods) + 1, figsize=(2.0 * (len(methods) + 1), 8))
    axes = np.atleast_2d(axes)
    for r, title in enumerate(titles):
        axes[r, 0].imshow(photos[r])
        axes[r, 0].set_title(title, fontsize=7)
        for c, method in enumerate(methods, start=1):
            axes[r, c].imshow(overlay(photos[r], display_map(maps[method][r])))
            if r == 0:
                axes[r, c].set_title(method, fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
