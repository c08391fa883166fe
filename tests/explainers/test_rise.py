"""RISE against a naive per-mask loop, mask statistics, chunking, registry, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.explainers import registry
from fastxai_jax.explainers import rise as rise_lib

H = W = 12
CLASSES = 3


def target(key):
    weights = jax.random.normal(key, (H * W * 3, CLASSES)) * 0.3

    def apply_fn(params, x):
        return x.reshape(x.shape[0], -1) @ params

    return apply_fn, weights


def test_rise_matches_a_naive_loop(key):
    apply_fn, weights = target(key)
    x = jax.random.uniform(jax.random.key(1), (2, H, W, 3))
    y = jnp.asarray([0, 2])
    num = 23
    masks = np.asarray(rise_lib.rise_masks(jax.random.key(4), num, (H, W), grid_size=3))
    reference = np.zeros((2, H, W))
    for mask in masks:  # the textbook loop: one query per mask and image
        for b in range(2):
            logits = np.asarray(apply_fn(weights, (x[b] * mask[..., None])[None]))[0]
            prob = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            reference[b] += prob[int(y[b])] * mask
    reference /= num * 0.5
    out = rise_lib.rise(
        apply_fn, weights, x, y, key=jax.random.key(4), num_masks=num, grid_size=3, chunk_size=5
    )
    np.testing.assert_allclose(np.asarray(out), reference, rtol=1e-5, atol=1e-6)
    # Chunking changes neither the masks nor the result.
    out_one_chunk = rise_lib.rise(
        apply_fn, weights, x, y, key=jax.random.key(4), num_masks=num, grid_size=3, chunk_size=64
    )
    np.testing.assert_allclose(np.asarray(out_one_chunk), np.asarray(out), rtol=1e-5, atol=1e-6)


def test_masks_are_smooth_shifted_and_keep_half():
    masks = np.asarray(rise_lib.rise_masks(jax.random.key(0), 2000, (H, W), grid_size=4))
    assert masks.shape == (2000, H, W)
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    np.testing.assert_allclose(masks.mean(), 0.5, atol=0.01)
    assert np.mean((masks > 0.01) & (masks < 0.99)) > 0.2  # bilinear: not binary
    # Random shifts: the mean mask is flat (no grid pattern), within noise.
    assert np.abs(masks.mean(0) - 0.5).max() < 0.06


def test_constant_score_gives_a_flat_map(key):
    # p_f(ŷ|·) ≡ 1/3 for any input → saliency = (1/3)·mean(M)/p ≈ 1/3 everywhere.
    apply_fn = lambda p, x: jnp.zeros((x.shape[0], CLASSES))
    x = jnp.ones((1, H, W, 3))
    out = np.asarray(
        rise_lib.rise(apply_fn, None, x, jnp.asarray([1]), key=key, num_masks=1000, grid_size=4)
    )
    np.testing.assert_allclose(out, 1 / 3, atol=0.03)


def test_registry_cost_and_fill(key):
    apply_fn, weights = target(key)
    x = jax.random.uniform(jax.random.key(1), (2, H, W, 3))
    out = registry.attribute(
        "rise", apply_fn, weights, x, key=key, num_masks=10, grid_size=3, chunk_size=10
    )
    assert out.shape == (2, H, W)
    assert registry.method_cost("rise", num_masks=4000) == (4000, 0)
    spec = registry.get_method("rise")
    assert spec.needs_key and not spec.needs_grad
    # family="half", fill=0 → masked pixels become 0.5 grey: on an all-grey image masking
    # changes nothing, so the map is flat at p = σ(0.5 − (−0.5)).
    grey = rise_lib.rise(
        lambda p, z: jnp.stack([z.mean((1, 2, 3)), -z.mean((1, 2, 3))], -1),
        None,
        jnp.full((1, H, W, 3), 0.5),
        jnp.asarray([0]),
        key=key,
        num_masks=400,
        grid_size=3,
        family="half",
    )
    np.testing.assert_allclose(np.asarray(grey), 1 / (1 + np.exp(-1.0)), atol=0.1)


def test_bad_input(key):
    apply_fn, weights = target(key)
    x = jnp.ones((2, H, W, 3))
    y = jnp.asarray([0, 1])
    with pytest.raises(ValueError, match="num_masks"):
        rise_lib.rise(apply_fn, weights, x, y, key=key, num_masks=0)
    with pytest.raises(ValueError, match="chunk_size"):
        rise_lib.rise(apply_fn, weights, x, y, key=key, num_masks=4, chunk_size=0)
    with pytest.raises(ValueError, match="logits of shape"):
        rise_lib.rise(lambda p, z: jnp.zeros((3,)), weights, x, y, key=key, num_masks=4)
    with pytest.raises(ValueError, match="target"):
        rise_lib.rise(apply_fn, weights, x, jnp.asarray([0]), key=key, num_masks=4)
    with pytest.raises(ValueError, match="key"):
        registry.attribute("rise", apply_fn, weights, x, num_masks=4)


def test_rise_per_image_keys_make_maps_independent_of_batch_size(key):
    """Issue 20: keys derived per image index, so batching a dataset changes nothing."""
    apply_fn, weights = target(key)
    x = jax.random.uniform(jax.random.key(1), (4, H, W, 3))
    y = jnp.asarray([0, 2, 1, 0])
    base = jax.random.key(9)
    options = dict(num_masks=23, grid_size=3, chunk_size=5)
    whole = rise_lib.rise(apply_fn, weights, x, y, key=rise_lib.image_keys(base, 0, 4), **options)
    pieces = [
        rise_lib.rise(
            apply_fn,
            weights,
            x[s : s + n],
            y[s : s + n],
            key=rise_lib.image_keys(base, s, n),
            **options,
        )
        for s, n in ((0, 1), (1, 3))
    ]
    np.testing.assert_allclose(np.concatenate(pieces), np.asarray(whole), rtol=1e-6, atol=1e-7)
    # Image b's map is the one-image RISE of its own key: the naive loop's masks.
    one = rise_lib.rise(
        apply_fn, weights, x[2:3], y[2:3], key=jax.random.fold_in(base, 2), **options
    )
    np.testing.assert_allclose(np.asarray(whole[2:3]), np.asarray(one), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="key must be one key or 4 keys"):
        rise_lib.rise(apply_fn, weights, x, y, key=rise_lib.image_keys(base, 0, 3), **options)
