"""The one method table: every method listed, attribute = prepare + compute,
learned explainers through ``explainer=``, user registration, class-count refusal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fastxai_jax as fx
from fastxai_jax.core import Cost, LearnedExplainer
from fastxai_jax.explainers import registry
from fastxai_jax.explainers.learned import fex, runs

SIZE, CLASSES = 16, 4

PER_INPUT = [
    "agi", "big", "dax", "gradcam", "gradient_shap", "ig", "input_x_gradient",
    "integrated_gradients", "mfaba", "mfaba_cos", "mfaba_norm", "mfaba_sharp", "mfaba_smooth",
    "noise_tunnel", "random", "rise", "saliency", "smoothgrad", "vargrad",
]  # fmt: skip
LEARNED = ["fastshap", "fex", "ltx", "tve"]


def _target(classes=CLASSES):
    weights = jax.random.normal(jax.random.key(0), (SIZE * SIZE * 3, classes)) * 0.05
    return (lambda p, x: x.reshape(x.shape[0], -1) @ p), weights


def _trained_fex():
    apply_fn, weights = _target()
    config = fex.FexConfig(
        num_classes=CLASSES, image_size=SIZE, patch_size=4, hidden_size=16, depth=1,
        num_heads=2, mlp_dim=32, explainer_family="half", target_family="half",
    )  # fmt: skip
    learned = fex.make(config, apply_fn, weights)
    params = fex.init_params(config, jax.random.key(1))
    return runs.Trained("fex", learned, params, CLASSES)


def test_available_methods_lists_every_per_input_and_learned_method():
    assert fx.available_methods() == sorted(PER_INPUT + LEARNED)
    assert sorted(registry.METHODS) == PER_INPUT and sorted(registry.LEARNED_METHODS) == LEARNED
    assert registry.method_cost("tve") == Cost(1, 0) and registry.method_cost("fex") == Cost(0, 0)
    assert registry.method_cost("ig", num_steps=8) == Cost(8, 8)


def test_attribute_is_prepare_then_compute_for_per_input_methods():
    apply_fn, weights = _target()
    x = jax.random.uniform(jax.random.key(2), (2, SIZE, SIZE, 3))
    prepared = fx.prepare("saliency", apply_fn, weights, x)
    np.testing.assert_array_equal(prepared.target, jnp.argmax(apply_fn(weights, x), -1))
    direct = fx.attribute("saliency", apply_fn, weights, x)
    np.testing.assert_array_equal(fx.compute(prepared, apply_fn, weights), direct)
    # a linear target's gradient does not depend on x: the same map for another image
    other = fx.attribute("saliency", apply_fn, weights, x[::-1], prepared.target)
    assert direct.shape == (2, SIZE, SIZE) and float(jnp.abs(direct).max()) > 0
    np.testing.assert_allclose(other, direct, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown method"):
        fx.prepare("nope", apply_fn, weights, x)
    with pytest.raises(ValueError, match="explainer"):
        fx.attribute("fex", apply_fn, weights, x)  # learned needs explainer=


def test_attribute_runs_a_trained_learned_explainer_for_the_class_asked():
    apply_fn, weights = _target()
    trained = _trained_fex()
    x = jax.random.uniform(jax.random.key(2), (2, SIZE, SIZE, 3))
    maps = {c: fx.attribute("fex", apply_fn, weights, x, c, explainer=trained) for c in (1, 3)}
    grid = fex.explain_grid(trained.explainer.config, trained.params, x, jnp.full((2,), 3))
    np.testing.assert_allclose(maps[3], fex.upsample(grid, (SIZE, SIZE)), rtol=1e-5, atol=1e-6)
    assert maps[1].shape == (2, SIZE, SIZE) and float(jnp.abs(maps[1] - maps[3]).max()) > 1e-4
    with pytest.raises(ValueError, match="target"):
        fx.attribute("fex", apply_fn, weights, x, CLASSES, explainer=trained)
    # a target with another class count is refused, naming it
    other_fn, other_weights = _target(classes=8)
    with pytest.raises(ValueError, match="apply_fn.*4 classes"):
        fx.attribute("fex", other_fn, other_weights, x, explainer=trained)
    with pytest.raises(ValueError, match="not 'ltx'"):
        fx.attribute("ltx", apply_fn, weights, x, explainer=trained)


def test_save_load_roundtrip_and_class_count_refusal(tmp_path):
    trained = _trained_fex()
    runs.save(tmp_path, trained)
    apply_fn, weights = _target()
    loaded = runs.load(tmp_path, apply_fn=apply_fn, target_params=weights)
    assert (loaded.method, loaded.num_classes) == ("fex", CLASSES)
    assert loaded.explainer.config == trained.explainer.config
    x = jax.random.uniform(jax.random.key(2), (2, SIZE, SIZE, 3))
    np.testing.assert_array_equal(loaded.explain(x, 2), trained.explain(x, 2))
    other_fn, other_weights = _target(classes=8)
    with pytest.raises(ValueError, match="apply_fn.*4 classes"):
        runs.load(tmp_path, apply_fn=other_fn, target_params=other_weights)
    with pytest.raises(ValueError, match="holds a fex"):
        runs.load(tmp_path, method="tve")


def test_users_register_their_own_methods_explicitly():
    name = "unit_test_ones"
    fx.register(name, lambda f, p, x, t, *, key=None: jnp.ones(x.shape[:3]), lambda **_: Cost(0, 0))
    try:
        apply_fn, weights = _target()
        x = jnp.full((1, SIZE, SIZE, 3), 0.5)
        assert name in fx.available_methods()
        np.testing.assert_array_equal(fx.attribute(name, apply_fn, weights, x), 1.0)
        with pytest.raises(ValueError, match="already"):
            fx.register("mfaba", lambda *a, **k: None, lambda **_: Cost(0, 0))
    finally:
        registry.METHODS.pop(name)
    assert isinstance(_trained_fex().explainer, LearnedExplainer)
