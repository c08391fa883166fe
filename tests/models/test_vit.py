"""ViT patch masking: all-ones mask is a no-op; a masked patch acts exactly as
if its token were removed from the sequence (it only enters via attention)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.models import build, random_variables
from fastxai_jax.models.vit import ViT, attention


@pytest.fixture(scope="module")
def small_vit():
    module, family = build(
        "vit_ti16", num_classes=5, image_size=32, patch_size=8, hidden_size=32, depth=2,
        num_heads=2, mlp_dim=64,
    )  # fmt: skip
    assert family == "half"
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    return module, random_variables(module, x, seed=1), x


def _apply(module):
    return jax.jit(lambda v, x, patch_keep=None: module.apply(v, x, patch_keep=patch_keep))


def test_all_ones_mask_equals_no_mask(small_vit):
    module, variables, x = small_vit
    apply = _apply(module)
    plain, aux = apply(variables, x)
    masked, aux_masked = apply(variables, x, patch_keep=jnp.ones((2, 16)))
    np.testing.assert_allclose(masked, plain, atol=1e-6)
    np.testing.assert_allclose(aux_masked["patch_tokens"], aux["patch_tokens"], atol=1e-6)
    assert aux["patch_tokens"].shape == (2, 16, 32)
    assert aux["cls"].shape == aux["pre_logits"].shape == (2, 32)


def test_masked_patches_equal_removing_their_tokens(small_vit):
    module, variables, x = small_vit
    keep_index = np.array([0, 2, 3, 7, 8, 13])  # patches kept for example 0
    patch_keep = np.zeros((2, 16), np.float32)
    patch_keep[0, keep_index] = 1.0
    patch_keep[1] = 1.0
    patch_keep[1, 5] = 0.0
    apply = _apply(module)
    logits, aux = apply(variables, x, patch_keep=jnp.asarray(patch_keep))
    plain, _ = apply(variables, x, patch_keep=jnp.ones((2, 16)))  # == no mask (see above)

    def on_subset(vit: ViT, images):
        tokens = vit.embed(images)  # [B, 17, D], CLS first
        subset = tokens[:1, np.concatenate([[0], keep_index + 1])]
        return vit.classify(vit.encode(subset))

    sub_logits, sub_aux = jax.jit(lambda v, x: module.apply(v, x, method=on_subset))(variables, x)
    np.testing.assert_allclose(logits[:1], sub_logits, atol=1e-5)
    np.testing.assert_allclose(aux["cls"][:1], sub_aux["cls"], atol=1e-5)
    # kept patch tokens also see only the kept set
    np.testing.assert_allclose(aux["patch_tokens"][0, keep_index], sub_aux["patch_tokens"][0],
                               atol=1e-5)  # fmt: skip
    assert np.abs(np.asarray(logits[1] - plain[1])).max() > 1e-4  # one dropped patch matters


def test_soft_mask_interpolates_and_has_finite_gradient(small_vit):
    module, variables, x = small_vit

    def logit(keep):
        return module.apply(variables, x, patch_keep=keep)[0][:, 1].sum()

    value_and_grad = jax.jit(jax.value_and_grad(logit))
    _, grad = value_and_grad(jnp.ones((2, 16)).at[:, 3].set(0.0))
    assert np.all(np.isfinite(np.asarray(grad)))
    assert np.abs(np.asarray(grad)).max() > 0
    half, _ = value_and_grad(jnp.full((2, 16), 0.5))
    ones, _ = value_and_grad(jnp.ones((2, 16)))
    # a uniform soft mask rescales every patch key by 0.5 but not CLS: differs from ones
    assert abs(float(half) - float(ones)) > 1e-5


def test_bad_inputs(small_vit):
    module, variables, x = small_vit
    apply = _apply(module)
    with pytest.raises(ValueError, match="patch_keep"):
        apply(variables, x, patch_keep=jnp.ones((2, 15)))
    with pytest.raises(ValueError, match=r"x must be \[B, 32, 32, C\]"):
        apply(variables, x[:, :16])
    with pytest.raises(ValueError, match="divisible"):
        build("vit_s16", num_heads=5)
    with pytest.raises(ValueError, match="unknown ViT options"):
        build("vit_b16", num_layers=3)


def test_preset_parameter_counts():
    """timm's published counts: ViT-Ti/16 5,717,416; ViT-S/16 22,050,664."""
    for name, count in (("vit_ti16", 5_717_416), ("vit_s16", 22_050_664)):
        module, _ = build(name, num_classes=1000)
        shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
        assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)) == count


def _reference_attention(q, k, v, key_bias):
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
    if key_bias is not None:
        logits = logits + key_bias[:, None, None, :]
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)


@pytest.mark.parametrize("with_bias", [False, True])
def test_attention_equals_softmax_attention_and_its_gradient(with_bias):
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 7, 3, 4)) * 3, jnp.float32) for _ in range(3))
    # Large logits (scale 3 × 3 × 2) and keys removed with -inf.
    bias = None
    if with_bias:
        bias = jnp.asarray(np.log(rng.uniform(0.1, 1.0, (2, 7))), jnp.float32)
        bias = bias.at[:, 2].set(-jnp.inf).at[1, 5].set(-jnp.inf)
    np.testing.assert_allclose(
        attention(q, k, v, bias), _reference_attention(q, k, v, bias), rtol=1e-5, atol=1e-6
    )
    weights = jnp.asarray(rng.normal(size=(2, 7, 3, 4)), jnp.float32)
    grads = [
        jax.grad(lambda q, k, v, fn=fn: jnp.sum(fn(q, k, v, bias) * weights), argnums=(0, 1, 2))(
            q, k, v
        )
        for fn in (attention, _reference_attention)
    ]
    for ours, ref in zip(*grads, strict=True):
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
