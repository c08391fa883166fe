"""Gradient baselines: closed forms on linear models, IG completeness, noise tunnel."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _jit_checks import assert_jit_matches_eager

from fastxai_jax.explainers import gradients, noise_tunnel
from fastxai_jax.explainers.registry import attribute, available_methods, method_cost

SHAPE = (3, 8, 8, 3)
NUM_CLASSES = 5


@pytest.fixture(scope="module")
def linear():
    k_w, k_b, k_x = jax.random.split(jax.random.key(3), 3)
    params = {
        "w": jax.random.normal(k_w, (8 * 8 * 3, NUM_CLASSES)),
        "b": jax.random.normal(k_b, (NUM_CLASSES,)),
    }

    def apply_fn(p, x):
        return x.reshape(x.shape[0], -1) @ p["w"] + p["b"][None, :]

    x = jax.random.uniform(k_x, SHAPE)
    target = jnp.array([0, 3, 4], jnp.int32)
    # d logit_target / dx, [B, H, W, C]
    grad = np.stack([np.asarray(params["w"][:, t]).reshape(8, 8, 3) for t in target.tolist()])
    return apply_fn, params, x, target, grad


@pytest.fixture(scope="module")
def smooth():
    k1, k2, k_x = jax.random.split(jax.random.key(5), 3)
    params = {
        "w1": jax.random.normal(k1, (8 * 8 * 3, 16)) * 0.2,
        "w2": jax.random.normal(k2, (16, 4)),
    }

    def apply_fn(p, x):
        hidden = jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"])
        return jax.nn.softplus(hidden) @ p["w2"]

    x = jax.random.uniform(k_x, SHAPE)
    target = jnp.argmax(apply_fn(params, x), axis=-1).astype(jnp.int32)
    return apply_fn, params, x, target


def test_registered_names():
    names = set(available_methods())
    expected = {"saliency", "input_x_gradient", "ig", "smoothgrad", "vargrad", "gradient_shap"}
    expected |= {"big", "agi", "gradcam", "random", "mfaba", "mfaba_sharp", "mfaba_smooth"}
    expected |= {"mfaba_norm", "mfaba_cos"}
    assert expected <= names


def test_saliency_and_input_x_gradient_closed_form(linear):
    apply_fn, params, x, target, grad = linear
    sal = attribute("saliency", apply_fn, params, x, target)
    np.testing.assert_allclose(np.asarray(sal), np.abs(grad).sum(-1), rtol=1e-5)
    signed = gradients.saliency(apply_fn, params, x, target, absolute=False, per_channel=True)
    np.testing.assert_allclose(np.asarray(signed), grad, rtol=1e-5)
    ixg = attribute("input_x_gradient", apply_fn, params, x, target)
    np.testing.assert_allclose(np.asarray(ixg), (np.asarray(x) * grad).sum(-1), rtol=1e-5)
    # matches jax.grad of a single input's logit
    one = jax.grad(lambda z: apply_fn(params, z[None])[0, 3])(x[1])
    np.testing.assert_allclose(np.asarray(signed[1]), np.asarray(one), rtol=1e-5)
    assert method_cost("saliency") == (1, 1)


@pytest.mark.parametrize("method", gradients.IG_METHODS)
def test_ig_completeness(smooth, method):
    apply_fn, params, x, target = smooth
    baseline = jnp.full(SHAPE[1:], 0.2)
    attribution, delta = gradients.integrated_gradients_with_delta(
        apply_fn, params, x, target, num_steps=256, method=method, baseline=baseline, batch_size=64
    )
    logits_x = np.asarray(apply_fn(params, x))[np.arange(3), np.asarray(target)]
    logits_b = np.asarray(apply_fn(params, jnp.broadcast_to(baseline, SHAPE)))[
        np.arange(3), np.asarray(target)
    ]
    diff = logits_x - logits_b
    total = np.asarray(attribution).reshape(3, -1).sum(-1)
    np.testing.assert_allclose(total, diff, rtol=0.01)
    np.testing.assert_allclose(np.asarray(delta), total - diff, atol=1e-4)


def test_ig_quadrature_and_linear_closed_form(linear):
    for method in gradients.IG_METHODS:
        alphas, weights = gradients.ig_alphas_and_weights(7, method)
        assert alphas.min() >= 0 and alphas.max() <= 1
        # Captum's trapezoid keeps steps 1/n with halved ends: (n − 1)/n in all
        expected = 6 / 7 if method == "captum_trapezoid" else 1.0
        np.testing.assert_allclose(weights.sum(), expected, rtol=1e-6)
    apply_fn, params, x, target, grad = linear
    ig = attribute("ig", apply_fn, params, x, target, num_steps=5, batch_size=2)
    np.testing.assert_allclose(np.asarray(ig), (np.asarray(x) * grad).sum(-1), rtol=1e-4)
    assert method_cost("ig", num_steps=32) == (32, 32)


def test_noise_tunnel_and_gradient_shap_on_linear(linear, key):
    apply_fn, params, x, target, grad = linear
    sg = attribute("smoothgrad", apply_fn, params, x, target, key=key, num_samples=6, batch_size=4)
    np.testing.assert_allclose(np.asarray(sg), np.abs(grad).sum(-1), rtol=1e-5)
    vg = attribute("vargrad", apply_fn, params, x, target, key=key, num_samples=6)
    np.testing.assert_allclose(np.asarray(vg), 0.0, atol=1e-4)
    # base method with options; the tunnel over I×G averages x̃ ⊙ W
    tunnel = noise_tunnel.noise_tunnel(
        apply_fn, params, x, target, key=key, base="input_x_gradient", num_samples=4, sigma=0.0
    )
    np.testing.assert_allclose(np.asarray(tunnel), (np.asarray(x) * grad).sum(-1), rtol=1e-5)
    # GradientSHAP with σ = 0 and a black baseline: W ⊙ x whatever α
    shap = attribute(
        "gradient_shap",
        apply_fn,
        params,
        x,
        target,
        key=key,
        sigma=0.0,
        num_samples=5,
        batch_size=2,
    )
    np.testing.assert_allclose(np.asarray(shap), (np.asarray(x) * grad).sum(-1), rtol=1e-5)
    noisy = attribute("gradient_shap", apply_fn, params, x, target, key=key, num_samples=5)
    again = attribute("gradient_shap", apply_fn, params, x, target, key=key, num_samples=5)
    np.testing.assert_array_equal(np.asarray(noisy), np.asarray(again))
    assert method_cost("smoothgrad", num_samples=50) == (50, 50)


def test_random_map(linear, key):
    apply_fn, params, x, target, _ = linear
    a = attribute("random", apply_fn, params, x, target, key=key)
    b = attribute("random", apply_fn, params, x, target, key=key)
    assert a.shape == (3, 8, 8)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert 0.0 <= float(a.min()) and float(a.max()) < 1.0
    assert method_cost("random") == (0, 0)
    with pytest.raises(ValueError, match="key"):
        attribute("random", apply_fn, params, x, target)


def test_jit_no_jit_and_single_trace(smooth):
    apply_fn, params, x, target = smooth

    def ig(p, xs, t):
        return gradients.integrated_gradients(apply_fn, p, xs, t, num_steps=8)

    explain, _ = assert_jit_matches_eager(ig, params, x, target, rtol=1e-4, atol=1e-6)
    explain(params, x * 0.5, target)


@pytest.mark.parametrize("per_channel", [False, True])
def test_ig_host_loop_equals_scan(smooth, per_channel):
    # 10 Gauss-Legendre points in chunks of 4: the last chunk is padded with weight 0.
    apply_fn, params, x, target = smooth
    options = dict(num_steps=10, batch_size=4, per_channel=per_channel, baseline=0.3)
    host = gradients.integrated_gradients(apply_fn, params, x, target, loop="host", **options)
    scan = gradients.integrated_gradients(apply_fn, params, x, target, loop="scan", **options)
    assert host.shape == scan.shape == (x.shape if per_channel else x.shape[:3])
    np.testing.assert_allclose(np.asarray(host), np.asarray(scan), rtol=1e-5, atol=1e-7)
    # The loop choice keeps completeness: Σ A = s(x) − s(x') to quadrature accuracy.
    if not per_channel:
        logits = apply_fn(params, x) - apply_fn(params, jnp.full_like(x, 0.3))
        expected = np.asarray(jnp.take_along_axis(logits, target[:, None], -1))[:, 0]
        np.testing.assert_allclose(np.asarray(host).sum(axis=(1, 2)), expected, rtol=1e-3)
    with pytest.raises(ValueError, match="loop='host'"):
        jax.jit(lambda p, xs, t: gradients.integrated_gradients(apply_fn, p, xs, t, loop="host"))(
            params, x, target
        )


@pytest.mark.parametrize(
    "method,options,x_bad,target_bad,name",
    [
        ("saliency", {}, "rank", None, "x"),
        ("saliency", {}, "nan", None, "x"),
        ("ig", {}, "inf", None, "x"),
        ("ig", {}, None, [0, 1, 9], "target"),
        ("ig", {"num_steps": 0}, None, None, "num_steps"),
        ("ig", {"method": "simpson"}, None, None, "method"),
        ("ig", {"baseline": jnp.zeros((5, 5, 3))}, None, None, "baseline"),
        ("ig", {"loop": "python"}, None, None, "loop"),
        ("gradient_shap", {"num_samples": -1}, None, None, "num_samples"),
        ("smoothgrad", {"base": "nope"}, None, None, "nope"),
    ],
)
def test_bad_input_raises(linear, key, method, options, x_bad, target_bad, name):
    apply_fn, params, x, target, _ = linear
    fn = {
        "saliency": gradients.saliency,
        "ig": gradients.integrated_gradients,
        "gradient_shap": gradients.gradient_shap,
        "smoothgrad": noise_tunnel.smoothgrad,
    }[method]
    if x_bad == "rank":
        x = x[0]
    elif x_bad == "nan":
        x = x.at[0, 0, 0, 0].set(jnp.nan)
    elif x_bad == "inf":
        x = x.at[0, 0, 0, 0].set(jnp.inf)
    if target_bad is not None:
        target = jnp.array(target_bad, jnp.int32)
    kwargs = {"key": key} if method in ("gradient_shap", "smoothgrad") else {}
    with pytest.raises(ValueError, match=name):
        fn(apply_fn, params, x, target, **kwargs, **options)


def test_resnet18_astronaut_saliency_equals_torch_float64(fixtures_dir):
    # The 224² astronaut holds 10,956 exact zeros. In float64 (no float32
    # rounding deciding near-tied max-pool windows) our input gradient equals
    # torch autograd's; reference from experiments/parity/make_references.py.
    import pathlib

    from skimage import data, transform

    from fastxai_jax.models import convert
    from fastxai_jax.models.normalization import normalise

    ref = np.load(
        pathlib.Path(__file__).parents[1] / "fixtures" / "parity" / "resnet18_astronaut.npz"
    )
    state = convert.load_state_dict(fixtures_dir / "torchvision_resnet18.safetensors")
    module = convert.resnet_module_for(state, 18)
    image = transform.resize(data.astronaut(), (224, 224), anti_aliasing=True)[None]
    target = int(ref["target"])
    with jax.enable_x64(True):
        variables = jax.tree.map(
            lambda a: jnp.asarray(a, jnp.float64), convert.convert_torchvision_resnet(state, 18)
        )
        grad = jax.grad(lambda x: module.apply(variables, normalise(x))[0][0, target])(
            jnp.asarray(image.astype(np.float32), jnp.float64)
        )
        diff = np.max(np.abs(np.asarray(grad[0]) - ref["float64"][0]))
    assert diff / np.max(np.abs(ref["float64"])) < 1e-5
