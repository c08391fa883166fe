"""FastSHAP (SPEC §6): kernel sampling, efficiency, loss, training with fit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.explainers.learned import fastshap, make_trainer
from fastxai_jax.train.loop import fit
from fastxai_jax.train.sharding import data_mesh


def test_objective_hand_computed():
    phi = jnp.array([[0.1, -0.2], [0.3, 0.0], [-0.1, 0.4]])  # d=3 players, K=2
    subsets = jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    v_s = jnp.array([[0.5, 0.2], [0.6, 0.1]])
    v_empty = jnp.array([0.4, 0.3])
    # S1: pred (0.0, 0.2), v−v0 (0.1, −0.1) → errs (0.1, −0.3); S2: pred (0.3, 0.0),
    # v−v0 (0.2, −0.2) → errs (−0.1, −0.2). mean of squares = (0.01+0.09+0.01+0.04)/4.
    value = fastshap.fastshap_objective(phi, subsets, v_s, v_empty)
    np.testing.assert_allclose(value, 0.15 / 4, rtol=1e-6)


def test_efficiency_normalisation():
    phi = jnp.array([[0.1, -0.2], [0.3, 0.0], [-0.1, 0.4]])
    v_full, v_empty = jnp.array([0.9, 0.05]), jnp.array([0.2, 0.3])
    out = fastshap.efficiency_normalise(phi, v_full, v_empty)
    np.testing.assert_allclose(out.sum(0), v_full - v_empty, rtol=1e-6)
    # additive: the same shift for every player
    np.testing.assert_allclose(out - phi, jnp.broadcast_to((out - phi)[:1], (3, 2)), atol=1e-7)
    np.testing.assert_allclose((out - phi)[0], [(0.7 - 0.3) / 3, (-0.25 - 0.2) / 3], rtol=1e-6)


def test_shapley_kernel_sampling(key):
    d, m = 6, 20000
    subsets = fastshap.sample_shapley_subsets(key, d, m)
    assert subsets.shape == (m, d)
    np.testing.assert_array_equal(subsets[0::2] + subsets[1::2], 1.0)  # paired
    sizes = np.asarray(subsets[0::2].sum(1)).astype(int)
    assert sizes.min() >= 1 and sizes.max() <= d - 1
    weights = np.array([1.0 / (k * (d - k)) for k in range(1, d)])
    expected = weights / weights.sum()
    observed = np.bincount(sizes, minlength=d)[1:] / len(sizes)
    np.testing.assert_allclose(observed, expected, atol=0.015)
    # within a size, every player is equally likely
    np.testing.assert_allclose(subsets.mean(0), 0.5, atol=0.02)


def _linear_target(params, x):
    """Class 0 logit = 6 × (mean of the top-left quadrant − 0.5); class 1 = 0."""
    score = jnp.mean(x[:, :8, :8, :], axis=(1, 2, 3)) - 0.5
    return jnp.stack([params * score, jnp.zeros_like(score)], axis=-1)


TINY = dict(
    num_classes=2, image_size=16, patch_size=8, hidden_size=16, depth=1, num_heads=2,
    mlp_dim=32, explainer_family="half", target_family="identity", num_samples=8,
)  # fmt: skip


def test_training_decreases_loss_and_ranks_the_relevant_quadrant(tmp_path):
    config = fastshap.FastShapConfig(**TINY)
    learned = fastshap.make(config, _linear_target, 6.0)
    init, update = make_trainer(
        learned, fastshap.default_optimizer(40, learning_rate=1e-2, warmup_frac=0.0)
    )
    images = jax.random.uniform(jax.random.key(0), (64, 16, 16, 3))
    batch_fn = lambda step: images[(step % 4) * 16 : (step % 4) * 16 + 16]
    state = init(jax.random.key(1), images[:2])
    mesh = data_mesh(8)
    state, history = fit(
        state, update, batch_fn, num_steps=40, key=jax.random.key(2), progress=False,
        mesh=mesh, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=20,
    )  # fmt: skip
    losses = np.array([h["loss"] for h in history])
    assert losses[-5:].mean() < 0.7 * losses[:5].mean(), losses
    maps = learned.explain(state.params, images[:8], jnp.zeros((8,), jnp.int32), upsample="none")
    assert maps.shape == (8, 2, 2)  # 4 players: only the top-left one matters
    inside = np.asarray(maps[:, 0, 0]).mean()
    outside = (np.asarray(maps).sum() - np.asarray(maps[:, 0, 0]).sum()) / (8 * 3)
    assert inside > outside + 0.1, (inside, outside)
    # resuming from the final checkpoint is a no-op that restores the same params
    resumed, more = fit(
        init(jax.random.key(9), images[:2]), update, batch_fn, num_steps=40,
        key=jax.random.key(2), progress=False, checkpoint_dir=tmp_path / "ckpt",
    )  # fmt: skip
    assert more == []
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_validation():
    with pytest.raises(ValueError, match="num_samples"):
        fastshap.FastShapConfig(num_classes=2, num_samples=3).validate()
    with pytest.raises(ValueError, match="patch_size"):
        fastshap.FastShapConfig(num_classes=2, image_size=16, patch_size=5).validate()
