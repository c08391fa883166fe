"""The final merge: every finished shard → one CSV, one JSON table, one plot per metric."""

from __future__ import annotations

import csv
import json
import os
import pathlib
from typing import Any

import numpy as np

from fastxai_jax.sweep import store
from fastxai_jax.sweep.sources import num_shards

__all__ = ["merge"]

_ID_COLUMNS = ("model", "method", "index", "label", "target", "predicted")


def _plot(summary: list[dict[str, Any]], column: str, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({s["model"] for s in summary})
    methods = sorted({s["method"] for s in summary})
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(methods), 3.2))
    for i, model in enumerate(models):
        means = [
            next((s[column]["mean"] for s in summary if (s["model"], s["method"]) == (model, m)), 0)
            for m in methods
        ]
        ax.bar(np.arange(len(methods)) + i * width, means, width, label=model)
    ax.set_xticks(np.arange(len(methods)) + width * (len(models) - 1) / 2, methods)
    ax.set_ylabel(f"mean {column}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(output_dir: str | os.PathLike, *, verify_attributions: bool = False) -> dict[str, Any]:
    """Merges a finished sweep into ``results.csv``, ``results.json`` and ``plot_<metric>.png``.

    Rows are ordered by (model, method, image index) as listed in the config,
    so the table does not depend on how many processes or devices made it.

    Args:
      output_dir: the sweep's output directory.
      verify_attributions: also check every ``.npy`` against its SHA-256
        (reads them all; the default checks their sizes and the scores' hashes).

    Returns:
      ``{"rows": [...], "summary": [{model, method, num_images, <metric>: {mean, std}}]}``.

    Raises:
      ValueError: a shard is missing or does not match its checksum.
    """
    root = pathlib.Path(output_dir)
    saved = json.loads((root / "sweep.json").read_text())
    config = saved["config"]
    total = num_shards(saved["num_images"], config["shard_size"])
    rows, summary = [], []
    for model in config["models"]:
        for method in config["methods"]:
            cell = [
                row
                for shard in range(total)
                for row in store.read_shard_rows(
                    root, model["label"], method["label"], shard, full=verify_attributions
                )
            ]
            rows += cell
            columns = [c for c in cell[0] if c not in _ID_COLUMNS]
            entry = {"model": model["label"], "method": method["label"], "num_images": len(cell)}
            for column in columns:
                values = np.asarray([row[column] for row in cell], np.float64)
                entry[column] = {"mean": float(values.mean()), "std": float(values.std())}
            summary.append(entry)
    fieldnames = list(_ID_COLUMNS) + [c for c in rows[0] if c not in _ID_COLUMNS]
    with open(root / "results.csv.tmp", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(root / "results.csv.tmp", root / "results.csv")
    table = {"rows": rows, "summary": summary}
    (root / "results.json.tmp").write_text(json.dumps(table, indent=1))
    os.replace(root / "results.json.tmp", root / "results.json")
    for column in fieldnames[len(_ID_COLUMNS) :]:
        _plot(summary, column, root / f"plot_{column}.png")
    return table
