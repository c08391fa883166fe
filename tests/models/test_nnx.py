"""A ``flax.nnx`` model explained through ``nnx.split`` / ``nnx.merge``.

The explainers take ``apply_fn(params, x)``; for NNX, ``params`` is the
``nnx.State`` from ``nnx.split`` and ``apply_fn`` merges it back into the
module (Flax's "functional API" for NNX).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fastxai_jax.explainers.gradients import integrated_gradients, saliency


class LinearNet(nnx.Module):
    """``logits = flatten(x) @ W + b``: saliency is ``W[:, c]``, IG is ``x ⊙ W[:, c]``."""

    def __init__(self, in_features: int, num_classes: int, *, rngs: nnx.Rngs):
        self.dense = nnx.Linear(in_features, num_classes, rngs=rngs)

    def __call__(self, x):
        return self.dense(x.reshape(x.shape[0], -1))


class TinyCNN(nnx.Module):
    """conv → ReLU → global mean → dense."""

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 6, kernel_size=(3, 3), rngs=rngs)
        self.head = nnx.Linear(6, num_classes, rngs=rngs)

    def __call__(self, x):
        return self.head(jnp.mean(nnx.relu(self.conv(x)), axis=(1, 2)))


def functional(model: nnx.Module):
    """``(apply_fn, params)`` for the explainers, from ``nnx.split``."""
    graphdef, params = nnx.split(model)

    def apply_fn(params, x):
        return nnx.merge(graphdef, params)(x)

    return apply_fn, params


def test_nnx_linear_saliency_and_ig_closed_form():
    model = LinearNet(8 * 8 * 3, 4, rngs=nnx.Rngs(0))
    apply_fn, params = functional(model)
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
    target = jnp.array([3, 0], jnp.int32)
    weights = np.asarray(model.dense.kernel[...])[:, np.asarray(target)].T.reshape(2, 8, 8, 3)
    got = saliency(apply_fn, params, x, target, absolute=False)
    np.testing.assert_allclose(np.asarray(got), weights.sum(-1), rtol=1e-5, atol=1e-6)
    ig = integrated_gradients(apply_fn, params, x, target, num_steps=4)
    expected = (np.asarray(x) * weights).sum(-1)  # exact for a linear model, any rule
    np.testing.assert_allclose(np.asarray(ig), expected, rtol=1e-5, atol=1e-6)


def test_nnx_cnn_saliency_equals_grad_of_the_stateful_module():
    model = TinyCNN(5, rngs=nnx.Rngs(2))
    apply_fn, params = functional(model)
    x = jax.random.uniform(jax.random.key(3), (3, 8, 8, 3))
    target = jnp.array([4, 1, 2], jnp.int32)
    np.testing.assert_allclose(apply_fn(params, x), model(x), rtol=1e-6)

    def score(x):  # the module object itself, no split/merge
        return jnp.sum(jnp.take_along_axis(model(x), target[:, None], axis=1))

    expected = jnp.abs(nnx.jit(nnx.grad(score))(x)).sum(-1)
    got = saliency(apply_fn, params, x, target)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-7)
    assert float(jnp.max(got)) > 0
