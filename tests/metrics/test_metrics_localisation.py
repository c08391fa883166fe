"""Localisation, complexity and cost metrics against naive references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax import metrics

TOL = 1e-5


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(0)
    attribution = np.round(rng.normal(size=(3, 8, 8)) * 3) / 3  # ties on purpose
    mask = rng.random((3, 8, 8)) < 0.3
    return attribution.astype(np.float32), mask


def _minmax(a):
    return (a - a.min()) / (a.max() - a.min())


def test_iou_threshold_and_mean(maps):
    attribution, mask = maps
    for threshold in (0.2, 0.5, "mean"):
        got = metrics.iou(attribution, mask, threshold=threshold)
        for b in range(3):
            a = attribution[b].astype(np.float64)
            inter = union = 0
            for r in range(8):
                for q in range(8):
                    on = (
                        a[r, q] > a.mean() if threshold == "mean" else _minmax(a)[r, q] >= threshold
                    )
                    inter += on and mask[b, r, q]
                    union += on or mask[b, r, q]
            np.testing.assert_allclose(got[b], inter / union, atol=TOL)


def test_boxes_pointing_game_relevance_mass(maps):
    attribution, _ = maps
    boxes = np.array([[0, 0, 4, 4], [2, 3, 8, 8], [5, 5, 6, 6]])
    masks = np.asarray(metrics.boxes_to_masks(boxes, (8, 8)))
    assert masks.sum(axis=(1, 2)).tolist() == [16, 30, 1]
    assert masks[1, 2, 3] and not masks[1, 1, 3] and not masks[1, 2, 2]
    hits = metrics.pointing_game(attribution, boxes)
    near = metrics.pointing_game(attribution, boxes, tolerance=2.0)
    mass = metrics.relevance_mass(attribution, boxes)
    for b in range(3):
        flat = int(np.argmax(attribution[b]))  # first maximum
        r, q = divmod(flat, 8)
        assert hits[b] == float(masks[b, r, q])
        within = any(
            masks[b, i, j] for i in range(8) for j in range(8) if (i - r) ** 2 + (j - q) ** 2 <= 4.0
        )
        assert near[b] == float(within)
        positive = np.maximum(attribution[b].astype(np.float64), 0)
        np.testing.assert_allclose(mass[b], positive[masks[b]].sum() / positive.sum(), atol=TOL)


def _naive_ap(scores, labels):
    ap, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= threshold
        tp = float(np.sum(predicted & labels))
        recall, precision = tp / labels.sum(), tp / predicted.sum()
        ap += (recall - previous_recall) * precision
        previous_recall = recall
    return ap


def test_segmentation_scores(maps):
    attribution, mask = maps
    got = metrics.segmentation_scores(attribution, mask)
    both = metrics.segmentation_scores(attribution, mask, ap_classes="both")
    for b in range(3):
        a = attribution[b].astype(np.float64)
        predicted = a > a.mean()
        np.testing.assert_allclose(got.pixel_accuracy[b], np.mean(predicted == mask[b]), atol=TOL)
        ious = [
            np.sum(~predicted & ~mask[b]) / np.sum(~predicted | ~mask[b]),
            np.sum(predicted & mask[b]) / np.sum(predicted | mask[b]),
        ]
        np.testing.assert_allclose(got.miou[b], np.mean(ious), atol=TOL)
        np.testing.assert_allclose(
            got.average_precision[b], _naive_ap(a.reshape(-1), mask[b].reshape(-1)), atol=TOL
        )
        # The metric's own float32 normalisation: exact ties between 1 − s and s depend on it.
        s = np.asarray(metrics.localisation.minmax_normalise(jnp.asarray(attribution)))[b]
        s = s.reshape(-1)
        pooled_scores = np.concatenate([1 - s, s])
        pooled_labels = np.concatenate([~mask[b].reshape(-1), mask[b].reshape(-1)])
        np.testing.assert_allclose(
            both.average_precision[b], _naive_ap(pooled_scores, pooled_labels), atol=TOL
        )
    pooled = metrics.pooled_segmentation(got, 64)
    inter = np.asarray(got.intersection).sum(0)
    union = np.asarray(got.union).sum(0)
    np.testing.assert_allclose(pooled["miou"], np.mean(inter / union), atol=TOL)
    np.testing.assert_allclose(pooled["map"], np.mean(got.average_precision), atol=TOL)


def test_sparseness_and_entropy(maps):
    attribution, _ = maps
    gini, ent = metrics.sparseness(attribution), metrics.entropy(attribution)
    for b in range(3):
        a = np.sort(np.abs(attribution[b].astype(np.float64)).reshape(-1))
        n = a.size
        want = sum((2 * (k + 1) - n - 1) * a[k] for k in range(n)) / (n * a.sum())
        np.testing.assert_allclose(gini[b], want, atol=TOL)
        p = a[a > 0] / a.sum()
        np.testing.assert_allclose(ent[b], -np.sum(p * np.log(p)), atol=TOL)
    one_hot = np.zeros((1, 4, 4), np.float32)
    one_hot[0, 1, 2] = 5.0
    np.testing.assert_allclose(metrics.sparseness(one_hot), [15 / 16], atol=TOL)
    np.testing.assert_allclose(metrics.entropy(np.ones((1, 4, 4))), [np.log(16)], atol=TOL)
    np.testing.assert_allclose(metrics.sparseness(np.ones((1, 4, 4))), [0.0], atol=TOL)


def test_cost_record_counts_time_and_memory():
    x = jnp.ones((4, 8))
    result, record = metrics.measure_cost(lambda: x * 2, num_inputs=4, method="label")
    np.testing.assert_allclose(result, 2.0)
    assert record.num_inputs == 4 and record.time_per_input_s >= 0
    assert record.peak_memory_bytes > 0 and record.memory_source in ("device", "ru_maxrss")
    assert record.forward_passes == -1 and record.model_queries == -1  # not a registered method
    with pytest.raises(ValueError, match="num_inputs"):
        metrics.measure_cost(lambda: x, num_inputs=0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda a, m: metrics.iou(a, m, threshold=1.5), "threshold"),
        (lambda a, m: metrics.iou(a, m, threshold=-0.1), "threshold"),
        (lambda a, m: metrics.iou(a, m, threshold="median"), "threshold"),
        (lambda a, m: metrics.iou(a[:, :7], m), "ground_truth"),
        (lambda a, m: metrics.pointing_game(np.full_like(a, np.nan), m), "attribution"),
        (lambda a, m: metrics.relevance_mass(a[0], m), "attribution"),
        (lambda a, m: metrics.relevance_mass(a[:0], m[:0]), "attribution"),
        (lambda a, m: metrics.pointing_game(a, m, tolerance=-1), "tolerance"),
        (lambda a, m: metrics.segmentation_scores(a, m, ap_classes="all"), "ap_classes"),
        (lambda a, m: metrics.sparseness(np.full_like(a, np.inf)), "attribution"),
        (lambda a, m: metrics.boxes_to_masks(np.zeros((2, 3)), (8, 8)), "boxes"),
    ],
)
def test_bad_input_raises_naming_argument(maps, call, match):
    attribution, mask = maps
    with pytest.raises(ValueError, match=match):
        call(attribution, mask)


def test_jit_agrees_with_eager(maps):
    attribution, mask = maps
    jitted = jax.jit(lambda a, m: metrics.segmentation_scores(a, m).average_precision)
    np.testing.assert_allclose(
        jitted(attribution, mask),
        metrics.segmentation_scores(attribution, mask).average_precision,
        atol=TOL,
    )


def test_pointing_game_tie_rule_on_a_blocky_map():
    # An 8×8 map whose best cell (rows/cols 8..15 of a 16×16 image after ×8 nearest
    # upsampling) holds a small object at pixels 11..12: the first maximum (8, 8) misses
    # it, the centroid of the maximal block (11.5 → 12, 12) hits it.
    grid = jnp.zeros((1, 2, 2)).at[0, 1, 1].set(1.0)
    blocky = jnp.repeat(jnp.repeat(grid, 8, axis=1), 8, axis=2)
    mask = jnp.zeros((1, 16, 16), bool).at[0, 11:13, 11:13].set(True)
    np.testing.assert_array_equal(metrics.pointing_game(blocky, mask), [0.0])
    np.testing.assert_array_equal(metrics.pointing_game(blocky, mask, ties="centre"), [1.0])
    # a unique maximum: both rules test the same pixel
    sharp = jnp.zeros((2, 16, 16)).at[0, 3, 4].set(1.0).at[1, 12, 12].set(1.0)
    two = jnp.stack([mask[0], mask[0]])
    np.testing.assert_array_equal(metrics.pointing_game(sharp, two), [0.0, 1.0])
    np.testing.assert_array_equal(metrics.pointing_game(sharp, two, ties="centre"), [0.0, 1.0])
    with pytest.raises(ValueError, match="ties"):
        metrics.pointing_game(blocky, mask, ties="last")
