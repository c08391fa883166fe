"""Patch grids, upsampling, masking in normalised space, Bernoulli policy, LoRA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.explainers import _masks
from fastxai_jax.explainers._masks import normalise_images as normalise
from fastxai_jax.explainers.learned import _lora


def test_patch_grid_and_bad_divisor():
    assert _masks.patch_grid((64, 48), 8) == (8, 6)
    with pytest.raises(ValueError, match="does not divide"):
        _masks.patch_grid((64, 64), 7, "x")
    with pytest.raises(ValueError, match="positive"):
        _masks.patch_grid((64, 64), 0)


def test_upsample_nearest_matches_kron():
    grid = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    out = _masks.upsample_nearest(jnp.asarray(grid), (6, 12))
    expected = np.stack([np.kron(g, np.ones((2, 3), np.float32)) for g in grid])
    np.testing.assert_array_equal(np.asarray(out), expected)
    with pytest.raises(ValueError, match="does not divide"):
        _masks.upsample_nearest(jnp.asarray(grid), (7, 12))


def test_upsample_bilinear_preserves_constants_and_interpolates():
    grid = jnp.asarray([[0.0, 1.0]])[None]  # [1, 1, 2]
    out = np.asarray(_masks.upsample_bilinear(grid, (1, 4)))[0, 0]
    # Half-pixel centres: output pixels at 0.25, 0.75, 1.25, 1.75 input units.
    np.testing.assert_allclose(out, [0.0, 0.25, 0.75, 1.0], atol=1e-6)


def test_masking_in_normalised_space_gives_the_fill():
    x = jax.random.uniform(jax.random.key(1), (2, 4, 4, 3))
    mask = jnp.zeros((2, 4, 4)).at[:, :2].set(1.0)
    for family, fill in (("imagenet", 0.0), ("half", 0.0), ("imagenet", -1.5)):
        fill01 = _masks.fill_value_01(fill, family)
        normed = np.asarray(normalise(_masks.apply_mask(x, mask, fill01), family))
        np.testing.assert_allclose(normed[:, 2:], fill, atol=1e-5)
        np.testing.assert_allclose(
            normed[:, :2], np.asarray(normalise(x, family))[:, :2], atol=1e-6
        )
    np.testing.assert_allclose(np.asarray(_masks.fill_value_01(0.0, "half")), [0.5] * 3)
    with pytest.raises(ValueError, match="unknown normalisation family"):
        _masks.fill_value_01(0.0, "nope")


def test_bernoulli_log_prob_and_entropy_at_extreme_logits():
    logits = jnp.asarray([-50.0, -50.0, 50.0, 50.0, 0.0, 2.0])
    mask = jnp.asarray([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    log_prob = np.asarray(_masks.bernoulli_log_prob(logits, mask), np.float64)
    assert np.all(np.isfinite(log_prob))
    expected = [-np.exp(-50.0), -50.0, -50.0, -np.exp(-50.0), np.log(0.5), -np.log1p(np.exp(2.0))]
    np.testing.assert_allclose(log_prob, expected, rtol=1e-6, atol=1e-30)
    entropy = np.asarray(_masks.bernoulli_entropy(logits), np.float64)
    p = 1.0 / (1.0 + np.exp(-2.0))
    np.testing.assert_allclose(entropy[4], np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(entropy[5], -(p * np.log(p) + (1 - p) * np.log(1 - p)), rtol=1e-6)
    # At ±50: H = 51·e^{-50} to first order, tiny but finite and non-negative.
    assert np.all(np.isfinite(entropy)) and np.all(entropy >= 0) and entropy[0] < 1e-18
    grads = jax.grad(lambda z: jnp.sum(_masks.bernoulli_log_prob(z, mask)))(logits)
    grads_h = jax.grad(lambda z: jnp.sum(_masks.bernoulli_entropy(z)))(logits)
    assert np.all(np.isfinite(np.asarray(grads))) and np.all(np.isfinite(np.asarray(grads_h)))
    # d/dl log π(m) = m − σ(l).
    np.testing.assert_allclose(
        np.asarray(grads), np.asarray(mask - jax.nn.sigmoid(logits)), atol=1e-6
    )


def test_lora_merge_starts_at_identity_and_adds_low_rank_delta():
    params = {
        "block_0": {
            "attn": {"query": {"kernel": jnp.ones((4, 6)), "bias": jnp.zeros(6)}},
            "fc1": {"kernel": jnp.ones((4, 8))},
        },
        "patch_embed": {"kernel": jnp.ones((2, 2, 3, 4))},
        "head": {"kernel": jnp.ones((4, 2))},
    }
    adapters = _lora.lora_init(jax.random.key(0), params, rank=2)
    assert sorted(adapters) == ["block_0.attn.query.kernel", "block_0.fc1.kernel"]
    merged = _lora.lora_merge(params, adapters, alpha=4.0, rank=2)
    chex_equal = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), merged, params)
    assert all(jax.tree.leaves(chex_equal))  # B = 0 at init
    a = adapters["block_0.fc1.kernel"]["a"]
    adapters["block_0.fc1.kernel"]["b"] = jnp.full((2, 8), 0.5)
    merged = _lora.lora_merge(params, adapters, alpha=4.0, rank=2)
    np.testing.assert_allclose(
        np.asarray(merged["block_0"]["fc1"]["kernel"]),
        1.0 + 2.0 * np.asarray(a @ adapters["block_0.fc1.kernel"]["b"]),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="rank"):
        _lora.lora_init(jax.random.key(0), params, rank=0)
