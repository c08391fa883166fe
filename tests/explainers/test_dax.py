"""DAX (SPEC §3): kernel weights, loss, per-input vmapped fits, gradient-free target."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.core import Cost
from fastxai_jax.explainers import dax as dax_lib
from fastxai_jax.explainers._dax_pipeline import _zero_border, hsv_groups, rgb_to_hsv_authors
from fastxai_jax.explainers._superpixels import grid_segments, superpixel_segments
from fastxai_jax.models.dax_nets import DaxMaskGenerator, DaxStudent

TINY = dict(num_samples=64, epochs=3, hidden=16, features=4, patch_size=4, chunk=32)


def _corner_target(params, x):
    """Class 0 is driven by the top-left 8×8 corner's contrast only (a mean fill removes it)."""
    score = jnp.mean((x[:, :8, :8, :] - 0.5) ** 2, axis=(1, 2, 3)) - 0.04
    return jnp.stack([params * score, jnp.zeros_like(score)], axis=-1)


def test_lime_kernel_weights_hand_computed():
    z = jnp.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1]], jnp.float32)
    # cosine to all-ones: 1, 2/(√2·2), 1/2 → d = 0, 1 − 1/√2, 1/2; w = exp(−d²/(2·0.25²)).
    d = np.array([0.0, 1.0 - 1.0 / np.sqrt(2.0), 0.5])
    np.testing.assert_allclose(
        dax_lib.lime_kernel_weights(z), np.exp(-(d**2) / 0.125), rtol=1e-6, atol=1e-7
    )


def test_objective_hand_computed():
    s_keep = jnp.array([0.9, 0.2])
    s_removed = jnp.array([0.1, 0.6])
    p = jnp.array([0.8, 0.5])
    w = jnp.array([1.0, 0.5])
    # Σw(s_k − p)² = 0.01 + 0.5·0.09 = 0.055; Σw(s_r − p)² = 0.49 + 0.5·0.01 = 0.495.
    value = dax_lib.dax_objective(s_keep, s_removed, p, w, lam=2.0)
    np.testing.assert_allclose(value, 0.055 - 2.0 * 0.495, rtol=1e-6)


def test_dax_loss_composes_generator_and_student(key):
    config = dax_lib.DaxConfig(hidden=8, features=4)
    images = jax.random.uniform(key, (4, 8, 8, 3))
    gen = DaxMaskGenerator(features=4)
    student = DaxStudent(hidden=8)
    g_params = gen.init(jax.random.key(1), images)
    s_vars = student.init(jax.random.key(2), images)
    p = jnp.array([0.1, 0.9, 0.5, 0.3])
    w = jnp.array([1.0, 0.2, 0.7, 0.4])
    loss, new_vars = dax_lib.dax_loss(g_params, s_vars, images, p, w, jax.random.key(3), config)
    mask = gen.apply(g_params, images)
    # the generator's max-pool/upsample makes a mask constant on 8×8 blocks, min-max per image
    assert mask.shape == (4, 8, 8)
    k1, k2 = jax.random.split(jax.random.key(3))
    s_keep, upd = student.apply(
        s_vars, images * mask[..., None], train=True, rngs={"dropout": k1}, mutable=["batch_stats"]
    )
    s_rem, _ = student.apply(
        {**s_vars, **upd},
        images * (1 - mask[..., None]),
        train=True,
        rngs={"dropout": k2},
        mutable=["batch_stats"],
    )
    expected = np.sum(np.asarray(w) * (np.asarray(s_keep) - np.asarray(p)) ** 2) - np.sum(
        np.asarray(w) * (np.asarray(s_rem) - np.asarray(p)) ** 2
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert "batch_stats" in new_vars


def test_frozen_complement_trains_the_student_on_the_keep_term_only(key):
    images = jax.random.uniform(key, (4, 8, 8, 3))
    g_params = DaxMaskGenerator(features=4).init(jax.random.key(1), images)
    s_vars = DaxStudent(hidden=8).init(jax.random.key(2), images)
    p = jnp.array([0.1, 0.9, 0.5, 0.3])
    w = jnp.array([1.0, 0.2, 0.7, 0.4])

    def grads(**options):
        config = dax_lib.DaxConfig(hidden=8, features=4, **options)

        def loss(g, s):
            return dax_lib.dax_loss(
                g, {**s_vars, "params": s}, images, p, w, jax.random.key(3), config
            )

        (value, new_vars), (g_grad, s_grad) = jax.value_and_grad(
            loss, argnums=(0, 1), has_aux=True
        )(g_params, s_vars["params"])
        return value, new_vars, g_grad, s_grad

    shared = grads()
    frozen = grads(complement_trains_student=False)
    keep_only = grads(lam=0.0)
    # same forward value; the generator sees both terms in both modes
    np.testing.assert_allclose(frozen[0], shared[0], rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 frozen[2], shared[2])  # fmt: skip
    # the student gets the keep term's gradient only (and its batch statistics)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 frozen[3], keep_only[3])  # fmt: skip
    mask = DaxMaskGenerator(features=4).apply(g_params, images)[..., None]
    _, keep_stats = DaxStudent(hidden=8).apply(
        s_vars, images * mask, train=True, rngs={"dropout": jax.random.split(jax.random.key(3))[0]},
        mutable=["batch_stats"],
    )  # fmt: skip
    jax.tree.map(np.testing.assert_array_equal, frozen[1]["batch_stats"], keep_stats["batch_stats"])
    differs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), shared[3], keep_only[3])
    assert max(jax.tree.leaves(differs)) > 1e-4  # the shared student does get the complement


def test_mask_generator_batch_normalisation_is_one_minmax_over_the_batch(key):
    x = jax.random.uniform(key, (3, 16, 16, 3))
    per_image, params = DaxMaskGenerator(features=4, normalise="image").init_with_output(key, x)
    batch = DaxMaskGenerator(features=4, normalise="batch").apply(params, x)
    np.testing.assert_allclose(batch.min(), 0.0, atol=1e-6)
    np.testing.assert_allclose(batch.max(), 1.0, atol=1e-3)
    # the same pre-normalisation map, rescaled once: per image, the batch mask is an
    # increasing affine map of the per-image mask with a slope <= 1
    for b in range(3):
        lo, hi = float(batch[b].min()), float(batch[b].max())
        assert 0.0 <= lo <= hi <= 1.0 + 1e-6
        np.testing.assert_allclose(batch[b], lo + (hi - lo) * per_image[b], atol=1e-5)
    assert float(jnp.min(batch.max(axis=(1, 2)))) < 1.0 - 1e-3  # not every mask spans [0, 1]
    with pytest.raises(ValueError, match="normalise"):
        DaxMaskGenerator(features=4, normalise="bogus").apply(params, x)


def test_border_suppression_zeroes_the_frame():
    mask = jnp.ones((16, 20))
    out = _zero_border(mask, 0.125)  # 2 rows, 2 (round(2.5)) columns
    expected = np.zeros((16, 20))
    expected[2:14, 2:18] = 1.0
    np.testing.assert_array_equal(out, expected)


def test_mask_generator_shape_and_range(key):
    x = jax.random.uniform(key, (2, 16, 16, 3))
    mask = DaxMaskGenerator(features=4, normalise="image").init_with_output(key, x)[0]
    assert mask.shape == (2, 16, 16)
    np.testing.assert_allclose(mask.min(axis=(1, 2)), 0.0, atol=1e-6)
    np.testing.assert_allclose(mask.max(axis=(1, 2)), 1.0, atol=1e-3)  # eps 1e-8 in range
    # constant on each 8×8 block (max-pool 8 then nearest ×8)
    np.testing.assert_array_equal(mask[:, :8, :8], jnp.broadcast_to(mask[:, :1, :1], (2, 8, 8)))


def test_perturbation_first_all_ones_and_mean_fill(key):
    labels, num = grid_segments((8, 8), 4)
    assert num == 4
    x = jax.random.uniform(key, (8, 8, 3))
    z = dax_lib.sample_perturbations(key, 5, jnp.ones((num,)))
    np.testing.assert_array_equal(z[0], 1.0)
    means = dax_lib.segment_means(x, labels, num)
    np.testing.assert_allclose(means[3], x[4:, 4:].mean(axis=(0, 1)), rtol=1e-6)
    off = dax_lib.perturb(x, labels, means[labels], jnp.array([[1.0, 0.0, 1.0, 1.0]]))[0]
    np.testing.assert_allclose(off[:4, 4:], jnp.broadcast_to(means[1], (4, 4, 3)), rtol=1e-6)
    np.testing.assert_array_equal(off[4:], x[4:])


@pytest.mark.parametrize("fill", ["grey", "mean", 0.0, 0.5])
def test_queried_probabilities_use_the_fill(key, fill):
    """``info["probs"]`` is the black box on images whose off segments hold ``fill``:
    one grey value (mean of the channel means), their own mean colour, or the
    constant (LIME's hide_color)."""
    x = jax.random.uniform(key, (1, 16, 16, 3))
    options = dict(TINY, num_samples=32, epochs=1, fill=fill)
    _, info = dax_lib.dax(_corner_target, 60.0, x, jnp.zeros((1,), jnp.int32), key=key,
                          return_info=True, **options)  # fmt: skip
    labels, num = grid_segments((16, 16), 4)
    # dax() gives input 0 split(key, 1)[0]; dax_fit draws z from the first of 4 splits.
    key_z = jax.random.split(jax.random.split(key, 1)[0], 4)[0]
    z = np.asarray(dax_lib.sample_perturbations(key_z, 32, jnp.ones((num,))))
    image = np.asarray(x[0])
    lab = np.asarray(labels)
    expected = []
    for row in z:
        img = image.copy()
        for k in np.flatnonzero(row == 0):
            sel = lab == k
            if fill == "grey":
                img[sel] = image[sel].mean(axis=0).mean()
            else:
                img[sel] = image[sel].mean(axis=0) if fill == "mean" else fill
        expected.append(img)
    logits = _corner_target(60.0, jnp.asarray(np.stack(expected)))
    np.testing.assert_allclose(info["probs"][0], jax.nn.softmax(logits)[:, 0], rtol=1e-5, atol=1e-6)
    # a constant fill removes the corner's contrast entirely when its segments are off
    if fill == 0.5:
        corner_off = (z[:, 0] == 0) & (z[:, 1] == 0) & (z[:, 4] == 0) & (z[:, 5] == 0)
        assert corner_off.any()
        np.testing.assert_allclose(info["probs"][0][corner_off], jax.nn.sigmoid(60.0 * -0.04),
                                   rtol=1e-5)  # fmt: skip


def _numpy_corner_target(x):
    score = np.mean((np.asarray(x)[..., :8, :8, :] - 0.5) ** 2, axis=(-3, -2, -1)) - 0.04
    return np.stack([60.0 * score, np.zeros_like(score)], axis=-1).astype(np.float32)


def callback_target(params, x):
    """The corner target computed in numpy: it has no JVP, so no gradient exists."""
    del params
    shape = jax.ShapeDtypeStruct(x.shape[:-3] + (2,), jnp.float32)
    return jax.pure_callback(_numpy_corner_target, shape, x, vmap_method="expand_dims")


@pytest.fixture(scope="module")
def fitted():
    x = jax.random.uniform(jax.random.key(11), (3, 16, 16, 3))
    target = jnp.array([0, 1, 0], jnp.int32)
    # the corner target is built so that a segment's own mean colour removes its
    # evidence; the fixture keeps that fill (the default became the authors' grey)
    masks, info = dax_lib.dax(
        callback_target, None, x, target, key=jax.random.key(7), return_info=True, fill="mean",
        **TINY,
    )  # fmt: skip
    return x, target, masks, info


def test_runs_on_a_target_without_gradient(fitted):
    x, target, masks, info = fitted
    with pytest.raises(Exception, match="(?i)jvp|differentiat"):
        jax.grad(lambda v: callback_target(None, v).sum())(x)
    assert masks.shape == (3, 16, 16)
    assert np.all(np.isfinite(np.asarray(masks)))
    # first perturbation is the clean image: its probability is the black box's.
    clean = jax.nn.softmax(_corner_target(60.0, x))[jnp.arange(3), target]
    np.testing.assert_allclose(info["probs"][:, 0], clean, rtol=1e-5)


def test_vmapped_fits_equal_single_fits(fitted):
    x, target, masks, info = fitted
    # input b is fitted with split(key, B)[b]; refit each alone with that key.
    keys = jax.random.split(jax.random.key(7), 3)
    options = {k: v for k, v in TINY.items() if k != "patch_size"}
    config = dax_lib.DaxConfig(**options, fill="mean")
    labels, num = grid_segments((16, 16), 4)
    single = jax.jit(
        lambda xb, tb, kb: dax_lib.dax_fit(
            callback_target, None, xb, tb, kb, labels, jnp.ones((num,)), config
        )
    )
    for b in range(3):
        mask_b, info_b = single(x[b], target[b], keys[b])
        np.testing.assert_allclose(masks[b], mask_b, atol=1e-5)
        np.testing.assert_allclose(info["epoch_loss"][b], info_b["epoch_loss"], atol=1e-5)


def test_finds_the_only_relevant_region(fitted):
    _, target, masks, _ = fitted
    masks = masks[np.asarray(target) == 0]  # explained class 0: the corner drives it
    inside = masks[:, :8, :8].mean(axis=(1, 2))
    outside = (masks.sum(axis=(1, 2)) - masks[:, :8, :8].sum(axis=(1, 2))) / (256 - 64)
    assert masks.shape[0] == 2
    assert np.all(np.asarray(inside) > np.asarray(outside) + 0.2), (inside, outside)


def test_superpixels_and_validation(key):
    x = np.asarray(jax.random.uniform(key, (2, 16, 16, 3)))
    labels, valid = superpixel_segments(x, "slic", n_segments=6)
    assert labels.shape == (2, 16, 16) and valid.shape[0] == 2
    assert np.all(labels.max(axis=(1, 2)) + 1 == valid.sum(axis=1))
    with pytest.raises(ValueError, match="segmentation"):
        superpixel_segments(x, "felzenszwalb")
    with pytest.raises(ValueError, match="unknown DAX options"):
        dax_lib.dax(_corner_target, 1.0, jnp.asarray(x), jnp.zeros((2,), jnp.int32), key=key, n=3)
    with pytest.raises(ValueError, match="target"):
        dax_lib.dax(_corner_target, 1.0, jnp.asarray(x), jnp.full((2,), 5, jnp.int32), key=key)
    assert dax_lib.dax_cost(num_samples=100) == Cost(100, 0)
    zeros = jnp.zeros((2,), jnp.int32)
    for option, value in [
        ("mask_normalise", "global"),
        ("input_scale", 0.0),
        ("border", 0.5),
        ("fill", 1.5),
        ("fill", "black"),
        ("reduction", "max"),
        ("split", "shuffled"),
        ("augment", "jitter"),
        ("snapshot_timing", "middle"),
        ("snapshot_smoothing", "gaussian"),
        ("batch_max", 1),
        ("dropout", 1.0),
    ]:
        with pytest.raises(ValueError, match=option):
            dax_lib.dax(_corner_target, 1.0, jnp.asarray(x), zeros, key=key, **{option: value})
    with pytest.raises(ValueError, match="batching"):
        dax_lib.dax(
            _corner_target,
            1.0,
            jnp.asarray(x),
            jnp.zeros((2,), jnp.int32),
            key=key,
            batching="pmap",
        )


def test_registered_gradient_free():
    from fastxai_jax.explainers import registry

    spec = registry.get_method("dax")
    assert spec.needs_key and not spec.needs_grad
    assert registry.method_cost("dax", num_samples=500) == Cost(500, 0)


def test_fill_from_text_and_command_line(capsys):
    from fastxai_jax.cli import main

    assert dax_lib.parse_fill("mean") == "mean"
    assert dax_lib.parse_fill("0") == 0.0 and dax_lib.parse_fill("0.5") == 0.5
    for bad in ("black", "1.5", "-0.1", "nan"):
        with pytest.raises(ValueError, match="fill"):
            dax_lib.parse_fill(bad)
    with pytest.raises(SystemExit):
        main(["train-explainer", "--method", "dax", "--workdir", "unused", "--dax-fill", "black"])
    assert "--dax-fill" in capsys.readouterr().err


def test_authors_hsv_closed_form():
    """Their hue: 60·(g−r)/Δ + 60 with blue smallest, 180 for a grey pixel (red is the
    first minimum); each of h, s, v divided by its maximum over the converted group."""
    x = jnp.array([[[[1.0, 0.5, 0.0]]], [[[0.2, 0.2, 0.2]]], [[[0.3, 0.6, 0.9]]]])
    out = rgb_to_hsv_authors(x, jnp.array([1, 1, 0]))
    eps = 1e-10
    h = np.array([30.0, 180.0])
    s = np.array([1.0 / (1.0 + eps), eps / (0.2 + eps)])
    v = np.array([1.0, 0.2])
    expected = np.stack([h / h.max(), s / s.max(), v / v.max()], axis=-1)
    np.testing.assert_allclose(out[:2, 0, 0], expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(out[2], x[2])  # group 0 is left in RGB


@pytest.mark.parametrize("step, first, count", [(0, False, 9), (1, False, 6), (0, True, 9)])
def test_authors_hsv_share_of_a_batch(key, step, first, count):
    """int(16·3/5) = 9 rows on even steps, int(16·2/5) = 6 on odd ones; in the first
    batch the explained image (row 0) is converted alone and not drawn."""
    groups = np.asarray(hsv_groups(key, 16, jnp.int32(step), jnp.bool_(first)))
    assert np.sum(groups == 1) == count
    assert (groups[0] == 2) == first and np.sum(groups == 2) == int(first)


@pytest.mark.slow  # two compiled fits: ~60 s on the shared 2-core machine
def test_snapshot_timing_without_learning(key):
    """With a zero learning rate the generator never moves: its mask at the start of
    an epoch (authors) equals the one at the end (SPEC), on the ordered split with a
    final partial batch; ``reduction="mean"`` is the sum over the batch size."""
    x = jax.random.uniform(key, (1, 8, 8, 3))
    options = dict(num_samples=45, epochs=2, hidden=4, features=2, patch_size=4, chunk=45,
                   split="ordered", learning_rate=0.0)  # fmt: skip
    masks = [
        dax_lib.dax(
            _corner_target,
            60.0,
            x,
            jnp.zeros((1,), jnp.int32),
            key=key,
            pool=4,
            snapshot_timing=timing,
            return_info=True,
            **options,
        )  # fmt: skip
        for timing in ("start", "end")
    ]
    np.testing.assert_allclose(masks[0][0], masks[1][0], atol=1e-6)
    # 45 samples: 40 train = 2 batches of 16 + 8; 5 validation
    s_keep, s_removed = jnp.array([0.2, 0.4]), jnp.array([0.1, 0.3])
    p, w = jnp.array([0.5, 0.5]), jnp.array([1.0, 0.5])
    total = dax_lib.dax_objective(s_keep, s_removed, p, w, 1.0)
    np.testing.assert_allclose(
        dax_lib.dax_objective(s_keep, s_removed, p, w, 1.0, "mean"), total / 2, rtol=1e-6
    )
