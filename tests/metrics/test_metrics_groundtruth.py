"""Ground-truth sanity on the embedded benchmark: the planted-object mask as a map
beats its inverse and a random map on every faithfulness and localisation metric."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax import metrics
from fastxai_jax.data.groundtruth import make_benchmark

RED, BLUE = np.array([0.86, 0.12, 0.12]), np.array([0.12, 0.24, 0.92])


def _closeness(x, colour):
    """[B, H, W]: 1 at the planted colour, falling to 0 at distance 0.25."""
    distance = jnp.linalg.norm(x - jnp.asarray(colour, x.dtype).reshape(1, 1, 1, 3), axis=-1)
    return jnp.maximum(1.0 - distance / 0.25, 0.0)


def colour_detector(params, x):
    """Hand-made target: logits (red, blue, none) from the amount of each class colour."""
    red = jnp.sum(_closeness(x, RED), axis=(1, 2))
    blue = jnp.sum(_closeness(x, BLUE), axis=(1, 2))
    scale, bias = params
    none = jnp.zeros_like(red)
    return jnp.stack([scale * red - bias, scale * blue - bias, none], axis=-1)


@pytest.fixture(scope="module")
def benchmark():
    data = make_benchmark(48, seed=3, image_size=32)
    x = jnp.asarray(data["images"])
    masks = np.asarray(data["masks"])
    colour = np.where((np.asarray(data["labels"]) // 4)[:, None], 1, 0)[:, 0]
    close = np.stack([np.asarray(_closeness(x, RED)), np.asarray(_closeness(x, BLUE))], axis=1)
    own = close[np.arange(len(colour)), colour]  # [N, H, W]
    # Keep images whose planted colour appears nowhere else (no same-colour distractor).
    clean = (np.where(masks, 0.0, own).sum(axis=(1, 2)) < 0.5) & (own.sum(axis=(1, 2)) > 8)
    index = np.flatnonzero(clean)[:4]
    assert len(index) == 4
    params = (0.5, 2.0)
    target = np.asarray(jnp.argmax(colour_detector(params, x[index]), axis=-1))
    np.testing.assert_array_equal(target, colour[index])  # the detector gets them right
    return x[index], jnp.asarray(masks[index]), params


def _maps(masks):
    mask_map = masks.astype(jnp.float32)
    random_map = jax.random.uniform(jax.random.key(7), masks.shape)
    return {"mask": mask_map, "inverse": 1.0 - mask_map, "random": random_map}


def test_mask_map_beats_inverse_and_random(benchmark):
    x, masks, params = benchmark
    scores = {}
    for name, a in _maps(masks).items():
        ins_del = metrics.insertion_deletion(
            colour_detector, params, x, a, step_size=32, insertion_substrate="blur"
        )
        pos_neg = metrics.pos_neg_perturbation(colour_detector, params, x, a)
        adp = metrics.adp_pic(colour_detector, params, x, a)
        seg = metrics.segmentation_scores(a, masks)
        scores[name] = {
            "insertion": ins_del["insertion"].auc,
            "deletion": -ins_del["deletion"].auc,
            "pos": -pos_neg["pos"].auc,
            "neg": pos_neg["neg"].auc,
            "adp": -adp.adp,
            "pic": adp.pic,
            "iou_mean": metrics.iou(a, masks, threshold="mean"),
            "iou_0.5": metrics.iou(a, masks, threshold=0.5),
            "pointing": metrics.pointing_game(a, masks),
            "mass": metrics.relevance_mass(a, masks),
            "pixel_accuracy": seg.pixel_accuracy,
            "miou": seg.miou,
            "ap": seg.average_precision,
        }
    # Every entry is oriented "higher is better".
    for metric, mask_value in scores["mask"].items():
        for other in ("inverse", "random"):
            mine, theirs = float(jnp.mean(mask_value)), float(jnp.mean(scores[other][metric]))
            if metric == "pic":  # x ⊙ mask leaves p unchanged: no increase, but never worse
                assert mine >= theirs, (metric, other, mine, theirs)
            else:
                assert mine > theirs, (metric, other, mine, theirs)
    # The clean-cut numbers the protocols promise for a perfect map.
    np.testing.assert_allclose(scores["mask"]["iou_mean"], 1.0)
    np.testing.assert_allclose(scores["mask"]["pointing"], 1.0)
    np.testing.assert_allclose(scores["mask"]["mass"], 1.0)
    np.testing.assert_allclose(scores["mask"]["ap"], 1.0)
    np.testing.assert_allclose(scores["mask"]["adp"], 0.0, atol=1e-4)
    np.testing.assert_allclose(scores["mask"]["neg"], 90.0)  # never loses ŷ before 90%
