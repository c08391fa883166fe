"""Grad-CAM on a hand-written Flax module with a closed form."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.explainers import cam
from fastxai_jax.explainers.registry import attribute
from fastxai_jax.models import build, init_perturbations, make_apply_fn, random_variables
from fastxai_jax.models.normalization import normalise


class PooledNet(nn.Module):
    """conv → perturb('feat') → global mean → dense: ∂y_c/∂A_ijk = w_kc / (h·w)."""

    @nn.compact
    def __call__(self, x, train=False):
        del train
        feat = nn.Conv(5, (3, 3), strides=(2, 2), name="conv")(x)
        feat = self.perturb("feat", feat)
        logits = nn.Dense(3, name="head")(jnp.mean(feat, axis=(1, 2)))
        return logits, {"features": {"feat": feat}}


@pytest.fixture(scope="module")
def net():
    module = PooledNet()
    x = jax.random.uniform(jax.random.key(2), (2, 8, 8, 3))
    variables = module.init(jax.random.key(0), x)
    return module, variables, x


def closed_form(module, variables, x, target, relu=True):
    _, aux = module.apply({"params": variables["params"]}, x)
    feat = np.asarray(aux["features"]["feat"])  # [B, 4, 4, 5]
    w = np.asarray(variables["params"]["head"]["kernel"])  # [5, 3]
    alpha = w[:, np.asarray(target)].T / (feat.shape[1] * feat.shape[2])  # [B, 5]
    cam_map = np.einsum("bk,bijk->bij", alpha, feat)
    return np.maximum(cam_map, 0) if relu else cam_map


def test_gradcam_closed_form(net):
    module, variables, x = net
    target = jnp.array([0, 2], jnp.int32)
    got = cam.gradcam(module.apply, variables, x, target, layer="feat", upsample=False, relu=False)
    np.testing.assert_allclose(
        np.asarray(got), closed_form(module, variables, x, target, relu=False), rtol=1e-5, atol=1e-7
    )
    relu = cam.gradcam(module.apply, variables, x, target, layer="feat", upsample=False)
    np.testing.assert_allclose(
        np.asarray(relu), closed_form(module, variables, x, target), rtol=1e-5, atol=1e-7
    )
    up = cam.gradcam(module.apply, variables, x, target, layer="feat")
    assert up.shape == (2, 8, 8)
    expected = jax.image.resize(
        jnp.asarray(closed_form(module, variables, x, target)), (2, 8, 8), "bilinear"
    )
    np.testing.assert_allclose(np.asarray(up), np.asarray(expected), rtol=1e-5, atol=1e-7)


def test_gradcam_through_registry(net):
    """The registry takes an ``apply_fn -> (logits, aux)`` on [0, 1] input."""
    module, variables, x = net
    target = jnp.array([1, 1], jnp.int32)
    apply_fn = make_apply_fn(module, "imagenet", with_aux=True)
    got = cam.gradcam_method(apply_fn, variables, x, target, layer="feat")
    ref = cam.gradcam(module.apply, variables, normalise(x, "imagenet"), target, layer="feat")
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-6)
    # Transition shim: module= and family= still build the same apply_fn.
    plain = make_apply_fn(module, "imagenet")
    shim = attribute(
        "gradcam", plain, variables, x, target, module=module, layer="feat", family="imagenet"
    )
    np.testing.assert_array_equal(np.asarray(shim), np.asarray(got))
    with pytest.raises(ValueError, match="layer"):
        cam.gradcam(module.apply, variables, x, target, layer="nope")
    with pytest.raises(ValueError, match="layer"):
        cam.gradcam_method(apply_fn, variables, x, target)
    with pytest.raises(ValueError, match=r"\(logits, aux\)"):
        cam.gradcam(plain, variables, x, target, layer="feat")
    with pytest.raises(ValueError, match="params"):
        cam.gradcam(apply_fn, [variables], x, target, layer="feat")
    with pytest.raises(ValueError, match="target"):
        cam.gradcam(module.apply, variables, x, jnp.array([0, 3], jnp.int32), layer="feat")


@pytest.mark.parametrize(
    ("name", "layer", "head", "size"),
    [
        ("small_cnn", "conv_last", "head", 64),
        ("resnet18", "layer4", "fc", 64),
        pytest.param("efficientnet_lite0", "head", "fc", 64, marks=pytest.mark.slow),
    ],
)
def test_zoo_gradcam_closed_form(name, layer, head, size):
    """Zoo models end in ``A → global mean → dense``: ``α_k = W[k, c] / (h·w)``."""
    module, family = build(name, num_classes=6)
    x = jax.random.uniform(jax.random.key(3), (2, size, size, 3))
    variables = random_variables(module, x)
    target = jnp.array([4, 1], jnp.int32)
    apply_fn = make_apply_fn(module, family, with_aux=True)
    got = cam.gradcam(apply_fn, variables, x, target, layer=layer, relu=False, upsample=False)
    feat = np.asarray(apply_fn(variables, x)[1]["features"][layer], np.float64)
    w = np.asarray(variables["params"][head]["kernel"], np.float64)
    alpha = w[:, np.asarray(target)].T / (feat.shape[1] * feat.shape[2])
    expected = np.einsum("bk,bijk->bij", alpha, feat)
    scale = np.max(np.abs(expected))
    assert scale > 0
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        pytest.param("resnet18", "layer3", marks=pytest.mark.slow),
        pytest.param("vgg16", "conv5_3", marks=pytest.mark.slow),
    ],
)
def test_zoo_gradcam_equals_perturbation_gradient(name, layer):
    """Consistency with the mutable-``perturbations`` route (the pre-``aux`` Grad-CAM)."""
    module, family = build(name, num_classes=6)
    x01 = jax.random.uniform(jax.random.key(4), (1, 32, 32, 3))
    variables = random_variables(module, x01)
    x = normalise(x01, family)
    perturbations = init_perturbations(module, variables, x)

    def logit(p):
        return module.apply({**variables, "perturbations": p}, x)[0][0, 2]

    grad = jax.jit(jax.grad(logit))(perturbations)[layer]
    feat = jax.jit(module.apply)(variables, x)[1]["features"][layer]
    expected = jnp.sum(jnp.mean(grad, axis=(1, 2))[:, None, None, :] * feat, axis=-1)
    apply_fn = make_apply_fn(module, family, with_aux=True)
    got = cam.gradcam(
        apply_fn, variables, x01, jnp.array([2]), layer=layer, relu=False, upsample=False
    )
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-6)
