"""Grad-CAM on a hand-written Flax module with a closed form."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.explainers import cam
from fastxai_jax.explainers.registry import attribute
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
    module, variables, x = net
    target = jnp.array([1, 1], jnp.int32)

    def apply_fn(v, x01):
        return module.apply(v, normalise(x01, "imagenet"))[0]

    got = attribute(
        "gradcam", apply_fn, variables, x, target, module=module, layer="feat", family="imagenet"
    )
    ref = cam.gradcam(module.apply, variables, normalise(x, "imagenet"), target, layer="feat")
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-6)
    with pytest.raises(ValueError, match="layer"):
        cam.gradcam(module.apply, variables, x, target, layer="nope")
    with pytest.raises(ValueError, match="module"):
        attribute("gradcam", apply_fn, variables, x, target, layer="feat")
    with pytest.raises(ValueError, match="target"):
        cam.gradcam(module.apply, variables, x, jnp.array([0, 3], jnp.int32), layer="feat")
