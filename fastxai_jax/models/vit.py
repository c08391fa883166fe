"""Vision Transformer (Dosovitskiy et al., 2021) in the timm / Hugging Face
layout: pre-norm blocks, exact GELU, CLS-token pooling after the final norm.

Both weight layouts share this module; they differ only in LayerNorm epsilon
(timm 1e-6, Hugging Face 1e-12), which is an attribute. ``__call__`` returns
``(logits, aux)`` with ``aux["cls"]`` [B, D], ``aux["patch_tokens"]``
[B, L, D] (after the final norm) and ``aux["pre_logits"]`` [B, D]. An
optional ``patch_keep`` [B, L] in [0, 1] removes dropped patch tokens from
the attention keys of every layer (CLS is always kept); a soft value ``m``
multiplies that key's unnormalised attention weight by ``m``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

VIT_PRESETS: dict[str, dict[str, int]] = {
    "vit_ti16": dict(hidden_size=192, depth=12, num_heads=3, mlp_dim=768, patch_size=16),
    "vit_s16": dict(hidden_size=384, depth=12, num_heads=6, mlp_dim=1536, patch_size=16),
    "vit_b16": dict(hidden_size=768, depth=12, num_heads=12, mlp_dim=3072, patch_size=16),
}

TIMM_LN_EPS = 1e-6
HF_LN_EPS = 1e-12


def key_bias_from_keep(keep: jnp.ndarray) -> jnp.ndarray:
    """``log(keep)`` with ``-inf`` where ``keep == 0`` and finite gradients.

    Args:
      keep: [B, N] key weights in [0, 1].

    Returns:
      [B, N] additive attention-logit bias.
    """
    positive = keep > 0
    safe = jnp.where(positive, keep, 1.0)
    return jnp.where(positive, jnp.log(safe), -jnp.inf)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections."""

    hidden_size: int
    num_heads: int
    qkv_bias: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray, key_bias: jnp.ndarray | None) -> jnp.ndarray:
        """x: [B, N, D]; key_bias: [B, N] added to attention logits or None."""
        batch, tokens, _ = x.shape
        head_dim = self.hidden_size // self.num_heads

        def project(name: str) -> jnp.ndarray:
            y = nn.Dense(self.hidden_size, use_bias=self.qkv_bias, name=name)(x)
            return y.reshape(batch, tokens, self.num_heads, head_dim)

        query, key, value = project("query"), project("key"), project("value")
        out = attention(query * head_dim**-0.5, key, value, key_bias)
        return nn.Dense(self.hidden_size, name="out")(out.reshape(batch, tokens, -1))


def attention(
    query: jnp.ndarray, key: jnp.ndarray, value: jnp.ndarray, key_bias: jnp.ndarray | None
) -> jnp.ndarray:
    """``softmax(q·kᵀ + bias)·v`` per head, ``[B, N, H, d]`` in and out.

    The softmax is normalised after the value product (``(e·v) / Σe`` with
    ``e = exp(l − max l)``): the same numbers as ``softmax(l)·v``, but XLA:CPU
    runs the two batched ``[H·B]`` matmuls on heads-major operands without
    materialising the normalised weights; a ViT-Ti-sized explainer trains
    ~20% faster on CPU. The shift ``max l`` is constant for the gradient
    (softmax is shift-invariant), so gradients equal the softmax ones.
    """
    q, k, v = (a.transpose(0, 2, 1, 3) for a in (query, key, value))  # [B, H, N, d]
    logits = jnp.matmul(q, k.swapaxes(-1, -2))  # [B, H, N, N]
    if key_bias is not None:
        logits = logits + key_bias[:, None, None, :]
    shift = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    weights = jnp.exp(logits - shift)
    out = jnp.matmul(weights, v) / jnp.sum(weights, axis=-1, keepdims=True)
    return out.transpose(0, 2, 1, 3)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)); x + mlp(ln(x))."""

    hidden_size: int
    num_heads: int
    mlp_dim: int
    layer_norm_eps: float
    qkv_bias: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray, key_bias: jnp.ndarray | None) -> jnp.ndarray:
        y = nn.LayerNorm(self.layer_norm_eps, name="norm1")(x)
        x = x + SelfAttention(self.hidden_size, self.num_heads, self.qkv_bias, name="attn")(
            y, key_bias
        )
        y = nn.LayerNorm(self.layer_norm_eps, name="norm2")(x)
        y = nn.Dense(self.mlp_dim, name="fc1")(y)
        y = nn.Dense(self.hidden_size, name="fc2")(nn.gelu(y, approximate=False))
        return x + y


class ViT(nn.Module):
    """ViT classifier with a CLS token and learned position embeddings.

    Attributes:
      num_classes: head size.
      image_size: input height = width.
      patch_size: square patch side.
      hidden_size, depth, num_heads, mlp_dim: transformer sizes.
      layer_norm_eps: 1e-6 (timm) or 1e-12 (Hugging Face).
      qkv_bias: whether q/k/v projections have biases.
    """

    num_classes: int = 1000
    image_size: int = 224
    patch_size: int = 16
    hidden_size: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_dim: int = 768
    layer_norm_eps: float = TIMM_LN_EPS
    qkv_bias: bool = True

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def setup(self):
        p = self.patch_size
        self.patch_embed = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding="VALID")
        init = nn.initializers.normal(0.02)
        self.cls_token = self.param("cls_token", init, (1, 1, self.hidden_size))
        self.pos_embed = self.param("pos_embed", init, (1, self.num_patches + 1, self.hidden_size))
        self.blocks = [
            EncoderBlock(
                self.hidden_size,
                self.num_heads,
                self.mlp_dim,
                self.layer_norm_eps,
                self.qkv_bias,
                name=f"block_{i}",
            )
            for i in range(self.depth)
        ]
        self.norm = nn.LayerNorm(self.layer_norm_eps)
        self.head = nn.Dense(self.num_classes)

    def embed(self, x: jnp.ndarray) -> jnp.ndarray:
        """Normalised images [B, H, W, C] -> tokens [B, 1 + L, D] (CLS first)."""
        if x.ndim != 4 or x.shape[1] != self.image_size or x.shape[2] != self.image_size:
            raise ValueError(
                f"x must be [B, {self.image_size}, {self.image_size}, C]; got shape {x.shape}"
            )
        patches = self.patch_embed(x)
        patches = patches.reshape(x.shape[0], -1, self.hidden_size)
        cls = jnp.broadcast_to(self.cls_token, (x.shape[0], 1, self.hidden_size))
        return jnp.concatenate([cls, patches], axis=1) + self.pos_embed

    def encode(self, tokens: jnp.ndarray, key_bias: jnp.ndarray | None = None) -> jnp.ndarray:
        """Runs the blocks and the final norm: [B, N, D] -> [B, N, D]."""
        for block in self.blocks:
            tokens = block(tokens, key_bias)
        return self.norm(tokens)

    def classify(self, encoded: jnp.ndarray):
        """Final-normed tokens [B, N, D] -> (logits, aux) pooled at CLS."""
        cls = encoded[:, 0]
        aux = {"cls": cls, "patch_tokens": encoded[:, 1:], "pre_logits": cls}
        return self.head(cls), aux

    def __call__(self, x: jnp.ndarray, train: bool = False, patch_keep: jnp.ndarray | None = None):
        """Args:
          x: [B, H, W, C] normalised images.
          train: unused (no dropout); kept for the common signature.
          patch_keep: optional [B, L] key weights for the L patch tokens.

        Returns:
          (logits [B, num_classes], aux).
        """
        del train
        tokens = self.embed(x)
        key_bias = None
        if patch_keep is not None:
            expected = (x.shape[0], self.num_patches)
            if tuple(patch_keep.shape) != expected:
                raise ValueError(f"patch_keep must have shape {expected}; got {patch_keep.shape}")
            keep = jnp.concatenate(
                [jnp.ones((x.shape[0], 1), tokens.dtype), patch_keep.astype(tokens.dtype)], axis=1
            )
            key_bias = key_bias_from_keep(keep)
        return self.classify(self.encode(tokens, key_bias))


def vit(name: str = "vit_ti16", num_classes: int = 1000, **overrides) -> ViT:
    """A preset ViT (``vit_ti16``, ``vit_s16``, ``vit_b16``) with overrides.

    Overrides are any :class:`ViT` attribute, e.g. ``depth=4, image_size=64``.
    """
    if name not in VIT_PRESETS:
        raise ValueError(f"unknown ViT preset {name!r}; known: {sorted(VIT_PRESETS)}")
    config = dict(VIT_PRESETS[name])
    config.update(overrides)
    unknown = set(config) - (set(ViT.__dataclass_fields__) - {"parent", "name", "num_classes"})
    if unknown:
        raise ValueError(f"unknown ViT options {sorted(unknown)}")
    if config["hidden_size"] % config["num_heads"]:
        raise ValueError(
            f"hidden_size {config['hidden_size']} must be divisible by num_heads "
            f"{config['num_heads']}"
        )
    if config.get("image_size", 224) % config["patch_size"]:
        raise ValueError("image_size must be a multiple of patch_size")
    return ViT(num_classes=num_classes, **config)


def vit_from_config(config) -> ViT:
    """The ViT backbone of a learned explainer's config (its classifier head is unused).

    ``config`` has ``vit_preset``, ``image_size``, ``patch_size`` and optional
    ``hidden_size``, ``depth``, ``num_heads``, ``mlp_dim`` overrides (``None`` = preset).
    """
    sizes = {
        name: getattr(config, name)
        for name in ("hidden_size", "depth", "num_heads", "mlp_dim")
        if getattr(config, name) is not None
    }
    return vit(
        config.vit_preset,
        num_classes=1,
        image_size=config.image_size,
        patch_size=config.patch_size,
        **sizes,
    )
