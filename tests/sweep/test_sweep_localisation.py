"""Localisation and POS/NEG metrics in the sweep: sharded == single device, == library calls;
metrics needing masks are refused on data without masks, before compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _sweep_helpers import tiny_cnn, tiny_config
from jax.sharding import Mesh

import fastxai_jax as fx
from fastxai_jax.data.groundtruth import make_benchmark
from fastxai_jax.metrics import localisation
from fastxai_jax.sweep.step import MASK_METRICS, make_step, method_key

METRICS = [
    ("iou", {"threshold": 0.2}),
    ("pointing_game", {}),
    ("relevance_mass", {}),
    ("segmentation", {"ap_classes": "both"}),
    ("pos_neg", {}),
]
COLUMNS = ("iou", "pointing_game", "relevance_mass", "pixel_accuracy", "miou",
           "average_precision", "pos_auc", "neg_auc")  # fmt: skip


@pytest.fixture(scope="module")
def outputs():
    bench = make_benchmark(8, seed=5, image_size=24)
    apply_fn, variables, _ = tiny_cnn(bench["images"])
    args = [jnp.asarray(bench[k]) for k in ("images", "labels")]
    index, masks = jnp.arange(8, dtype=jnp.int32), jnp.asarray(bench["masks"])
    out = {}
    for devices in (1, 8):
        mesh = Mesh(np.asarray(jax.devices()[:devices]), ("data",))
        step = make_step(apply_fn, "saliency", {}, METRICS, mesh)
        attribution, columns = step(variables, *args, index, method_key(0, "saliency"), masks)
        out[devices] = np.asarray(attribution), {k: np.asarray(v) for k, v in columns.items()}
    return apply_fn, variables, bench, out


def test_sharded_equals_single_device(outputs):
    *_, out = outputs
    (single, single_cols), (sharded, sharded_cols) = out[1], out[8]
    np.testing.assert_allclose(sharded, single, atol=1e-5, rtol=1e-5)
    assert set(COLUMNS) <= set(single_cols)
    for name in COLUMNS:
        np.testing.assert_allclose(sharded_cols[name], single_cols[name], atol=1e-5, err_msg=name)
    # Scores vary between images (the masks reach the metrics per image).
    assert np.ptp(single_cols["relevance_mass"]) > 0 and np.ptp(single_cols["iou"]) > 0


def test_scores_equal_library_calls_on_the_masks(outputs):
    apply_fn, variables, bench, out = outputs
    attribution, columns = out[8]
    images, masks = jnp.asarray(bench["images"]), jnp.asarray(bench["masks"])
    target = jnp.argmax(apply_fn(variables, images), axis=-1)
    maps = fx.saliency(apply_fn, variables, images, target)
    np.testing.assert_allclose(attribution, np.asarray(maps), atol=1e-5, rtol=1e-5)
    direct = {
        "iou": localisation.iou(maps, masks, threshold=0.2),
        "pointing_game": localisation.pointing_game(maps, masks),
        "relevance_mass": localisation.relevance_mass(maps, masks),
        "miou": localisation.segmentation_scores(maps, masks, ap_classes="both").miou,
        "pos_auc": fx.metrics.pos_neg_perturbation(apply_fn, variables, images, maps, target)[
            "pos"
        ].auc,
    }
    for name, values in direct.items():
        np.testing.assert_allclose(columns[name], np.asarray(values), atol=1e-5, err_msg=name)
    # Closed form: relevance mass = positive saliency inside the mask / all positive saliency.
    positive = np.maximum(np.asarray(maps), 0)
    mass = (positive * bench["masks"]).sum((1, 2)) / positive.sum((1, 2))
    np.testing.assert_allclose(columns["relevance_mass"], mass, rtol=1e-5)


@pytest.mark.parametrize("metric", sorted(MASK_METRICS))
def test_mask_metrics_on_data_without_masks_are_refused(tmp_path, no_compute, metric):
    data = {"source": "skimage", "names": ["astronaut", "coffee"], "image_size": 24}
    config = tiny_config(tmp_path / "out", data=data,
                         metrics=[{"name": "sparseness"}, {"name": metric}])  # fmt: skip
    with pytest.raises(ValueError, match=r"field metrics\[1\].name: .* has none"):
        fx.sweep.run(config, progress=False)
    assert not (tmp_path / "out").exists()


def test_learned_methods_are_validated_then_refused_before_compute(tmp_path, no_compute):
    learned = [{"name": "saliency"}, {"name": "fex", "explainer": str(tmp_path / "fex")}]
    config = fx.sweep.validate_config(tiny_config(tmp_path / "out", methods=learned))
    assert config["methods"][1]["explainer"] == str(tmp_path / "fex")
    with pytest.raises(ValueError, match=r"field methods\[1\].explainer: no trained explainer"):
        fx.sweep.run(config, progress=False)
    bad = [{"name": "saliency", "explainer": "runs/x"}]
    with pytest.raises(ValueError, match=r"field methods\[0\].explainer"):
        fx.sweep.validate_config(tiny_config(tmp_path / "out", methods=bad))
    with pytest.raises(ValueError, match=r"field methods\[0\].explainer: .*explainer's workdir"):
        fx.sweep.validate_config(tiny_config(tmp_path / "out", methods=[{"name": "ltx"}]))
    photos = {"source": "skimage", "names": ["astronaut", "lena"]}
    with pytest.raises(ValueError, match=r"field data.names\[1\]"):
        fx.sweep.run(tiny_config(tmp_path / "out", data=photos), progress=False)
