"""Insertion/deletion, POS/NEG and ADP/PIC against naive loop references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from fastxai_jax.metrics import _substrate, perturbation
from fastxai_jax.models.normalization import FAMILY_NORMALISATION

TOL = 1e-5


def _softmax(logits):
    logits = np.asarray(logits, np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _score_one(apply_fn, params, image, target, score):
    logits = np.asarray(apply_fn(params, jnp.asarray(image[None], jnp.float32)))[0]
    if score == "top1":
        return float(np.argmax(logits) == target)
    return float(_softmax(logits)[target])


def _order(values):
    """Indices by decreasing value, equal values by increasing index (stable)."""
    return sorted(range(len(values)), key=lambda i: (-values[i], i))


def _naive_curve(
    apply_fn,
    params,
    x,
    attr,
    target,
    mode,
    substrate,
    counts,
    *,
    feature_of=None,
    score="prob",
    per_channel=False,
):
    """Straight from the RISE protocol: for each step, perturb the top-k features, query."""
    x, substrate = np.asarray(x, np.float64), np.asarray(substrate, np.float64)
    batch, height, width, channels = x.shape
    curves = np.zeros((batch, len(counts)))
    for b in range(batch):
        for t, k in enumerate(counts):
            start, finish = (substrate[b], x[b]) if mode == "insertion" else (x[b], substrate[b])
            image = start.copy()
            for c in range(channels if per_channel else 1):
                a = np.asarray(attr[b])[..., c] if per_channel else np.asarray(attr[b])
                if feature_of is None:
                    values = list(a.reshape(-1))
                    ids = [[r * width + q for q in range(width)] for r in range(height)]
                else:
                    values, ids = feature_of(a)
                chosen = set(_order(list(values))[:k])
                for r in range(height):
                    for q in range(width):
                        if ids[r][q] in chosen:
                            if per_channel:
                                image[r, q, c] = finish[r, q, c]
                            else:
                                image[r, q] = finish[r, q]
            curves[b, t] = _score_one(apply_fn, params, image, int(target[b]), score)
    return curves


def _targets(apply_fn, params, x):
    return np.asarray(jnp.argmax(apply_fn(params, x), axis=-1))


def test_normalised_auc_known_integrals():
    t = np.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(perturbation.normalised_auc(jnp.asarray(2 * t + 1)), 2.0, rtol=1e-6)
    # Trapezoid on t^2 with h = 0.1 overestimates 1/3 by exactly h^2/6.
    np.testing.assert_allclose(
        perturbation.normalised_auc(jnp.asarray(t**2)), 1 / 3 + 0.01 / 6, rtol=1e-6
    )
    curve = jnp.asarray([[1.0, 0.5, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(perturbation.normalised_auc(curve), [0.5, 0.25], rtol=1e-6)


def test_insertion_deletion_match_naive_rise(tiny):
    apply_fn, params, x, attr = tiny
    target = _targets(apply_fn, params, x)
    result = perturbation.insertion_deletion(
        apply_fn,
        params,
        x,
        attr,
        step_size=10,
        insertion_substrate="blur",
        deletion_substrate="zeros_normalised",
        normalisation="imagenet",
    )
    counts = [min(10 * t, 64) for t in range(8)]  # ceil(64 / 10) = 7 steps
    mean = np.asarray(FAMILY_NORMALISATION["imagenet"][0])
    blurred = np.stack(
        [
            np.stack(
                [
                    scipy.ndimage.convolve(
                        np.asarray(x[b, :, :, c], np.float64) - mean[c],
                        scipy.ndimage.gaussian_filter(np.eye(1, 121, 60).reshape(11, 11), 5),
                        mode="constant",
                        cval=0.0,
                    )
                    + mean[c]
                    for c in range(3)
                ],
                axis=-1,
            )
            for b in range(2)
        ]
    )
    zeros_norm = np.broadcast_to(mean, x.shape)
    ins = _naive_curve(apply_fn, params, x, attr, target, "insertion", blurred, counts)
    dele = _naive_curve(apply_fn, params, x, attr, target, "deletion", zeros_norm, counts)
    np.testing.assert_allclose(result["insertion"].curve, ins, atol=TOL)
    np.testing.assert_allclose(result["deletion"].curve, dele, atol=TOL)
    np.testing.assert_allclose(
        result["insertion"].auc,
        (ins.sum(1) - ins[:, 0] / 2 - ins[:, -1] / 2) / (len(counts) - 1),
        atol=TOL,
    )
    np.testing.assert_allclose(result["deletion"].fractions, np.asarray(counts) / 64)
    # The first deletion point and the last insertion point are the clean input.
    np.testing.assert_allclose(
        result["deletion"].curve[:, 0], result["insertion"].curve[:, -1], atol=TOL
    )


def test_rise_blur_kernel_matches_scipy():
    delta = np.zeros((11, 11))
    delta[5, 5] = 1.0
    reference = scipy.ndimage.gaussian_filter(delta, 5)
    kernel = _substrate.gaussian_kernel_1d(11, 5.0)
    np.testing.assert_allclose(np.outer(kernel, kernel), reference, atol=1e-12)


def test_patch_grid_per_channel_top1_match_naive(tiny, key):
    apply_fn, params, x, attr = tiny
    target = _targets(apply_fn, params, x)
    zeros = np.zeros(x.shape)

    # 2x2 patches on 8x8, scored by their summed attribution (a patch size that
    # does not divide the image is refused since issue 20).
    def patches(a):
        ids = [[(r // 2) * 4 + q // 2 for q in range(8)] for r in range(8)]
        sums = [0.0] * 16
        for r in range(8):
            for q in range(8):
                sums[ids[r][q]] += float(a[r, q])
        return sums, ids

    got = perturbation.deletion(
        apply_fn,
        params,
        x,
        attr,
        granularity="patch",
        patch_size=2,
        num_steps=4,
        substrate="zeros",
        score="top1",
    )
    counts = [(t * 16) // 4 for t in range(5)]
    want = _naive_curve(
        apply_fn,
        params,
        x,
        attr,
        target,
        "deletion",
        zeros,
        counts,
        feature_of=patches,
        score="top1",
    )
    np.testing.assert_allclose(got.curve, want, atol=TOL)

    # Explainer grid 4x4 on 8x8, nearest upsampled.
    grid = jax.random.normal(key, (2, 4, 4))
    got = perturbation.insertion(
        apply_fn, params, x, grid, granularity="grid", num_steps=16, substrate="zeros"
    )
    want = _naive_curve(
        apply_fn,
        params,
        x,
        grid,
        target,
        "insertion",
        zeros,
        list(range(17)),
        feature_of=lambda a: (
            list(np.asarray(a).reshape(-1)),
            [[(r // 2) * 4 + q // 2 for q in range(8)] for r in range(8)],
        ),
    )
    np.testing.assert_allclose(got.curve, want, atol=TOL)

    # MFABA's quirk: each channel ranked on its own.
    per_channel_attr = jax.random.normal(jax.random.fold_in(key, 1), x.shape)
    got = perturbation.deletion(
        apply_fn, params, x, per_channel_attr, per_channel=True, step_size=16, substrate="zeros"
    )
    want = _naive_curve(
        apply_fn,
        params,
        x,
        per_channel_attr,
        target,
        "deletion",
        zeros,
        [0, 16, 32, 48, 64],
        per_channel=True,
    )
    np.testing.assert_allclose(got.curve, want, atol=TOL)


def test_mean_substrate_and_random_ties(tiny, key):
    apply_fn, params, x, attr = tiny
    target = _targets(apply_fn, params, x)
    mean = np.broadcast_to(np.asarray(x).mean(axis=(1, 2), keepdims=True), x.shape)
    got = perturbation.deletion(apply_fn, params, x, attr, substrate="mean", num_steps=8)
    want = _naive_curve(
        apply_fn, params, x, attr, target, "deletion", mean, [8 * t for t in range(9)]
    )
    np.testing.assert_allclose(got.curve, want, atol=TOL)
    np.testing.assert_allclose(
        perturbation.deletion_auc(apply_fn, params, x, attr, substrate="mean", num_steps=8),
        got.auc,
    )
    # An explicit target other than ŷ is scored instead of ŷ.
    other = (target + 1) % 5
    got = perturbation.deletion(apply_fn, params, x, attr, other, substrate="mean", num_steps=8)
    want = _naive_curve(
        apply_fn, params, x, attr, other, "deletion", mean, [8 * t for t in range(9)]
    )
    np.testing.assert_allclose(got.curve, want, atol=TOL)
    # Random tie-breaking: deterministic under a key, equal to stable order on tie-free maps.
    a1 = perturbation.deletion(apply_fn, params, x, attr, tie_break="random", key=key)
    a2 = perturbation.deletion(apply_fn, params, x, attr, tie_break="random", key=key)
    np.testing.assert_array_equal(a1.curve, a2.curve)
    distinct = jax.random.normal(key, attr.shape)
    r = perturbation.deletion(apply_fn, params, x, distinct, tie_break="random", key=key)
    s = perturbation.deletion(apply_fn, params, x, distinct)
    np.testing.assert_allclose(r.curve, s.curve, atol=TOL)


def test_chunked_equals_unchunked_and_one_compilation(tiny):
    apply_fn, params, x, attr = tiny
    traces = []

    def counting_apply(p, images):
        traces.append(images.shape)
        return apply_fn(p, images)

    one = perturbation.insertion_deletion(
        counting_apply, params, x, attr, step_size=4, chunk_size=1
    )
    # Traced once for ŷ and once in the lax.map body, both inside the one jitted function.
    assert traces == [(2, 8, 8, 3), (1 * 2 * 2, 8, 8, 3)]  # chunk × (ins, del) × B images
    many = perturbation.insertion_deletion(
        counting_apply, params, x, attr, step_size=4, chunk_size=7
    )
    for name in ("insertion", "deletion"):
        np.testing.assert_allclose(one[name].curve, many[name].curve, atol=1e-6)
        assert one[name].curve.shape == (2, 17)
    # Same shapes and options again: no new trace of the model.
    before = len(traces)
    perturbation.insertion_deletion(
        counting_apply, params, x + 0.0, attr * 2, step_size=4, chunk_size=7
    )
    assert len(traces) == before  # no new trace: the compiled function is reused


def test_pos_neg_matches_ltx_reference(tiny):
    apply_fn, params, x, attr = tiny
    target = _targets(apply_fn, params, x)
    got = perturbation.pos_neg_perturbation(apply_fn, params, x, attr)
    zeros = np.zeros(x.shape)
    steps = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    counts = [0] + [int(64 * p) for p in steps]
    for name, sign in (("pos", 1.0), ("neg", -1.0)):
        want = _naive_curve(
            apply_fn,
            params,
            x,
            sign * np.asarray(attr),
            target,
            "deletion",
            zeros,
            counts,
            score="top1",
        )
        np.testing.assert_allclose(got[name].curve, want, atol=TOL)
        auc = [100 * np.trapezoid(w, x=np.arange(0, 1, 0.1)) for w in want]
        np.testing.assert_allclose(got[name].auc, auc, atol=1e-4)
    np.testing.assert_allclose(got["pos"].fractions, np.arange(10) / 10)


def test_adp_pic_matches_formula(tiny):
    apply_fn, params, x, attr = tiny
    target = _targets(apply_fn, params, x)
    got = perturbation.adp_pic(apply_fn, params, x, attr)
    for b in range(2):
        a = np.asarray(attr[b], np.float64)
        s = (a - a.min()) / (a.max() - a.min())
        p = _score_one(apply_fn, params, np.asarray(x[b]), int(target[b]), "prob")
        pm = _score_one(apply_fn, params, np.asarray(x[b]) * s[..., None], int(target[b]), "prob")
        np.testing.assert_allclose(got.adp[b], 100 * max(p - pm, 0) / p, atol=1e-4)
        np.testing.assert_allclose(got.pic[b], 100.0 * (pm > p))
        np.testing.assert_allclose(got.masked_prob[b], pm, atol=TOL)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(attribution=np.zeros((2, 8, 7))), "attribution"),
        (dict(attribution=np.full((2, 8, 8), np.nan)), "attribution"),
        (dict(x=np.zeros((0, 8, 8, 3), np.float32), attribution=np.zeros((0, 8, 8))), "x"),
        (dict(x=np.full((2, 8, 8, 3), 2.0, np.float32)), "x"),
        (dict(granularity="superpixel"), "granularity"),
        (dict(granularity="patch"), "patch_size"),
        (dict(score="logit"), "score"),
        (dict(num_steps=0), "num_steps"),
        (dict(num_steps=4, step_size=4), "step_size"),
        (dict(tie_break="random"), "key"),
        (dict(substrate="zeros_normalised"), "normalisation"),
        (dict(substrate="noise"), "substrate"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(target=np.array([0, 9])), "target"),
    ],
)
def test_bad_input_raises_naming_argument(tiny, kwargs, match):
    apply_fn, params, x, attr = tiny
    args = dict(x=x, attribution=attr)
    args.update({k: kwargs.pop(k) for k in ("x", "attribution") if k in kwargs})
    with pytest.raises(ValueError, match=match):
        perturbation.deletion(apply_fn, params, args["x"], args["attribution"], **kwargs)
