"""``fastxai evaluate``: the per-method table, its files and the CLI's error path."""

import csv
import json

import jax
import numpy as np
import pytest

from fastxai_jax import metrics
from fastxai_jax.cli import evaluate, main
from fastxai_jax.explainers import registry


def test_evaluate_methods_writes_table_and_plots(tiny, tmp_path):
    apply_fn, params, x, attr = tiny
    masks = np.zeros(x.shape[:3], bool)
    masks[:, 2:5, 3:6] = True
    patch = {"patch_size": 4, "num_steps": 4, "substrate": "zeros_normalised"}
    protocol = {
        **evaluate.default_protocol(),
        "step_size": 16,
        "normalisation": "half",
        "patch_protocol": patch,
    }
    summary, curves = evaluate.evaluate_methods(
        apply_fn,
        params,
        x,
        masks,
        ["saliency", "random"],
        key=jax.random.key(0),
        batch_size=2,
        protocol=protocol,
        progress=False,
    )
    # The table's numbers are the library's numbers, averaged over inputs.
    saliency = registry.attribute("saliency", apply_fn, params, x)
    expected = metrics.insertion_deletion(
        apply_fn, params, x, saliency, step_size=16, normalisation="half"
    )
    np.testing.assert_allclose(
        summary["saliency"]["insertion_auc"], float(expected["insertion"].auc.mean()), atol=1e-5
    )
    patch_deletion = metrics.deletion(
        apply_fn, params, x, saliency, granularity="patch", patch_size=4, num_steps=4,
        substrate="zeros_normalised", normalisation="half",
    )  # fmt: skip
    np.testing.assert_allclose(
        summary["saliency"]["patch_deletion_auc"], float(patch_deletion.auc.mean()), atol=1e-5
    )
    np.testing.assert_allclose(
        summary["saliency"]["pointing_game"],
        float(metrics.pointing_game(saliency, masks).mean()),
        atol=1e-6,
    )
    assert summary["random"]["forward_passes"] == 0 and summary["saliency"]["forward_passes"] == 1
    # Per-image scores, in image order, behind each mean (for paired comparisons).
    np.testing.assert_allclose(
        summary["saliency"]["per_input"]["insertion_auc"], expected["insertion"].auc, atol=1e-5
    )
    np.testing.assert_allclose(
        np.mean(summary["random"]["per_input"]["deletion_auc"]),
        summary["random"]["deletion_auc"],
        rtol=1e-12,
    )
    assert len(curves["saliency"]["insertion"]["mean"]) == 5  # ceil(64 / 16) + 1 points
    config = {"model": "tiny", "num": 2, "protocol": protocol}
    evaluate.write_results(tmp_path, summary, curves, config)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["methods"]["random"]["pos_auc"] == summary["random"]["pos_auc"]
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [row["method"] for row in rows] == ["saliency", "random"]
    assert "per_input" not in rows[0] and "deletion_auc" in rows[0]
    for name in evaluate.CURVES:
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_rejects_bad_input(tiny, capsys):
    apply_fn, params, x, _ = tiny
    with pytest.raises(ValueError, match="masks"):
        evaluate.evaluate_methods(
            apply_fn,
            params,
            x,
            np.zeros((2, 8, 7), bool),
            ["random"],
            key=jax.random.key(0),
            progress=False,
        )
    with pytest.raises(ValueError, match="unknown method"):
        evaluate.evaluate_methods(
            apply_fn,
            params,
            x,
            np.zeros((2, 8, 8), bool),
            ["nope"],
            key=jax.random.key(0),
            progress=False,
        )
    assert main(["evaluate", "--model", "vgg16", "--out", "unused", "--num", "2"]) == 2
    assert "--untrained" in capsys.readouterr().err
