"""The one contract every learned explainer (FEX, LTX, TVE, FastSHAP) satisfies.

For each method on a tiny target: ``explain`` maps are ``[B, H, W]``; ``explain``
spends no more target queries than it declares (counted on a wrapped
``apply_fn`` / encoder); ``explain`` under ``jit`` traces once; and
``make_update`` equals a hand-rolled ``value_and_grad`` + optax step.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fastxai_jax.core import LearnedExplainer
from fastxai_jax.explainers import registry
from fastxai_jax.explainers.learned import (
    fastshap,
    fex,
    ltx,
    make_update,
    optimizer_for,
    tve,
)
from fastxai_jax.models import make_apply_fn
from fastxai_jax.models.small_cnn import SmallCNN
from fastxai_jax.train.loop import init_state

SIZE, CLASSES, BATCH = 16, 3, 4


class Counter:
    """Wraps a target function and counts its calls (traced calls included)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, params, x):
        self.calls += 1
        return self.fn(params, x)


def _linear(params, x):
    return x.reshape(x.shape[0], -1) @ params


def _build(method):
    """``(learned, counter)``: the explainer and the counted target/encoder."""
    weights = jax.random.normal(jax.random.key(0), (SIZE * SIZE * 3, CLASSES)) * 0.05
    vit = dict(hidden_size=16, depth=1, num_heads=2, mlp_dim=32, explainer_family="half")
    if method == "fex":
        counter = Counter(_linear)
        config = fex.FexConfig(
            num_classes=CLASSES, image_size=SIZE, patch_size=4, target_family="half",
            num_masks=2, backbone_mode="lora", lora_rank=2, **vit,
        )  # fmt: skip
        return fex.make(config, counter, weights), counter
    if method == "fastshap":
        counter = Counter(_linear)
        config = fastshap.FastShapConfig(
            num_classes=CLASSES, image_size=SIZE, patch_size=8, target_family="half",
            num_samples=4, **vit,
        )  # fmt: skip
        return fastshap.make(config, counter, weights), counter
    if method == "tve":
        counter = Counter(lambda p, x: x.reshape(x.shape[0], 2, 8, 2, 8, 3).mean((2, 4)).reshape(
            x.shape[0], 12))  # fmt: skip
        head = {"kernel": jax.random.normal(jax.random.key(1), (12, CLASSES)), "bias": jnp.zeros(3)}
        config = tve.TveConfig(
            embed_dim=12, image_size=SIZE, grid=4, patch_size=4, head_hidden=8, head_layers=1,
            encoder_family="identity", **vit,
        )  # fmt: skip
        return tve.make(config, counter, None, head=head), counter
    module = SmallCNN(num_classes=CLASSES, widths=(4, 8))
    variables = module.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    counter = Counter(make_apply_fn(module, "half"))
    config = ltx.LtxConfig(kind="cnn", family="half", lam=1.0)
    return ltx.make(config, counter, variables, module=module), counter


METHODS = ["fex", "ltx", "tve", "fastshap"]


@pytest.fixture(scope="module")
def built():
    x = jax.random.uniform(jax.random.key(2), (BATCH, SIZE, SIZE, 3), minval=0.1)
    out = {}
    for method in METHODS:
        learned, counter = _build(method)
        out[method] = (learned, counter, learned.init_params(jax.random.key(3), x))
    return out, x


@pytest.mark.parametrize("method", METHODS)
def test_every_learned_method_honours_the_contract(built, method):
    table, x = built
    learned, counter, params = table[method]
    assert isinstance(learned, LearnedExplainer)
    # the table's declared query count is the explainer's own
    spec = registry.LEARNED_METHODS[method]
    assert learned.target_queries_per_explain == spec.target_queries_per_explain
    assert isinstance(learned.config, spec.config_cls)

    # explain: [B, H, W], finite; no target query beyond the declared count
    counter.calls = 0
    maps = learned.explain(params, x)
    assert maps.shape == (BATCH, SIZE, SIZE) and bool(jnp.all(jnp.isfinite(maps)))
    assert counter.calls <= learned.target_queries_per_explain
    if learned.conditions_on_class:
        counter.calls = 0
        given = learned.explain(params, x, 1)  # a given class needs no prediction
        assert counter.calls == 0 and given.shape == (BATCH, SIZE, SIZE)
        np.testing.assert_allclose(given, learned.explain(params, x, jnp.ones(BATCH, jnp.int32)))
    else:
        with pytest.raises(ValueError, match="target"):
            learned.explain(params, x, 1)
    if learned.explain_grid is not None:
        grid = learned.explain_grid(params, x)
        assert grid.ndim == 3 and grid.shape[0] == BATCH and grid.shape[1] < SIZE

    # jit: one trace for two batches of the same shape (the counter is per code object)
    chex.clear_trace_counter()
    traced = jax.jit(chex.assert_max_traces(lambda p, z: learned.explain(p, z), n=1))
    np.testing.assert_allclose(traced(params, x), maps, rtol=1e-5, atol=1e-6)
    traced(params, x[::-1])

    # make_update == a hand-rolled value_and_grad + optax step (same batch, same key)
    optimizer = optimizer_for(learned, optax.adam(1e-2))
    state = init_state(params, optimizer)
    key = jax.random.key(4)
    new_state, metrics = make_update(learned.loss_fn, optimizer)(state, x, key)
    (loss, _), grads = jax.value_and_grad(learned.loss_fn, has_aux=True)(params, x, key)
    updates, _ = optimizer.update(grads, state.opt_state, params)
    expected = optax.apply_updates(params, updates)
    assert int(new_state.step) == 1
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    moved = [float(jnp.abs(a - b).max()) for a, b in zip(
        jax.tree.leaves(new_state.params), jax.tree.leaves(params), strict=True)]  # fmt: skip
    assert max(moved) > 0  # the step changed something


def test_update_keeps_params_when_the_loss_is_not_finite():
    def loss_fn(params, batch, key):
        return jnp.sum(params["w"] * batch) * jnp.nan, {}

    optimizer = optax.sgd(1.0)
    state = init_state({"w": jnp.ones(3)}, optimizer)
    new_state, metrics = make_update(loss_fn, optimizer)(state, jnp.ones(3), jax.random.key(0))
    np.testing.assert_array_equal(new_state.params["w"], 1.0)
    assert int(new_state.step) == 1 and bool(jnp.isnan(metrics["loss"]))
    with pytest.raises(ValueError, match="optimizer"):
        make_update(loss_fn, "adam")
