"""TVE's two-axis mixing heads (Wang et al., ICML 2024; SPEC §5).

Each layer mixes along the hidden axis and then along the token axis
(``LayerNorm → Linear over hidden → act → transpose → Linear over tokens →
act → transpose``).

* :class:`TveAuthorsHead` (default of ``TveConfig.arch="authors"``): the
  authors' ``ExplainerHead`` (guanchuwang/TVE, models/vit_mae_explainer/
  explainer.py:28-74): every layer has a LayerNorm (eps 1e-12); the input layer
  maps ``[L+1, D]`` backbone tokens straight to ``[S²+1, E]`` and, like the
  output layer, is linear; the middle layers use exact GELU in both places and
  add their (pre-LayerNorm) input. The extra output token is the last one.
  :func:`convert_authors_head` reads their state dict.
* :class:`TveHead` (``arch="shared"``): this library's earlier head (GELU in
  every layer, a ``hidden`` width, a final LayerNorm + Linear to ``E``, and an
  optional locality-prior init); the README's TVE benchmark rows use it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def local_mixing_matrix(tokens_in: int, tokens_out: int) -> np.ndarray:
    """``[tokens_in, tokens_out]``: each output cell the area-weighted mean of the input
    tokens it overlaps, both square grids over the same image (identity if equal).

    Raises:
      ValueError: if either count is not a perfect square.
    """
    sides = []
    for count in (tokens_in, tokens_out):
        side = int(round(np.sqrt(count)))
        if side * side != count:
            raise ValueError(f"local token mixing needs square token grids; got {count} tokens")
        sides.append(side)
    t, c = sides
    edges_t, edges_c = np.linspace(0, 1, t + 1), np.linspace(0, 1, c + 1)
    low = np.maximum(edges_t[:-1, None], edges_c[None, :-1])
    high = np.minimum(edges_t[1:, None], edges_c[None, 1:])
    overlap = np.clip(high - low, 0.0, None)  # [t, c]
    overlap /= overlap.sum(axis=0, keepdims=True)
    return np.kron(overlap, overlap).astype(np.float32)


def _local_init(key, shape, dtype=jnp.float32):
    del key
    return jnp.asarray(local_mixing_matrix(*shape), dtype)


class MixingLayer(nn.Module):
    """One hidden-then-token mixing layer: ``[B, T, D] -> [B, tokens_out, hidden_out]``."""

    hidden_out: int
    tokens_out: int
    local_init: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.LayerNorm(name="norm")(x)
        h = nn.gelu(nn.Dense(self.hidden_out, name="hidden_mix")(h))
        h = jnp.swapaxes(h, 1, 2)  # [B, hidden, T]
        kernel_init = _local_init if self.local_init else nn.linear.default_kernel_init
        h = nn.gelu(nn.Dense(self.tokens_out, kernel_init=kernel_init, name="token_mix")(h))
        return jnp.swapaxes(h, 1, 2)


class TveHead(nn.Module):
    """Per-cell embedding predictor.

    Attributes:
      num_cells: ``S²`` output cells.
      embed_dim: ``E``, the target encoder's embedding width.
      hidden: width of the mixing layers.
      num_layers: mixing layers (>= 1); all but the first are residual.
      local_init: start every token-mixing kernel at the area-overlap matrix
        (cell ``c`` = mean of the tokens under it; identity when the grids
        coincide) instead of random: a locality prior, still trained freely.
    """

    num_cells: int
    embed_dim: int
    hidden: int = 128
    num_layers: int = 3
    local_init: bool = False

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Maps backbone tokens ``[B, L, D]`` to ``[B, num_cells, embed_dim]``."""
        local = self.local_init
        h = MixingLayer(self.hidden, self.num_cells, local, name="mix_0")(tokens)
        for i in range(1, self.num_layers):
            h = h + MixingLayer(self.hidden, self.num_cells, local, name=f"mix_{i}")(h)
        h = nn.LayerNorm(name="out_norm")(h)
        return nn.Dense(self.embed_dim, name="out")(h)


class AuthorsHeadLayer(nn.Module):
    """The authors' ``ExplainerHeadLayer``: ``[B, T_in, D_in] -> [B, tokens_out, hidden_out]``."""

    hidden_out: int
    tokens_out: int
    gelu: bool = False
    shortcut: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        def act(h):
            return nn.gelu(h, approximate=False) if self.gelu else h

        h = nn.LayerNorm(epsilon=1e-12, name="layernorm")(x)
        h = act(nn.Dense(self.hidden_out, name="dense1")(h))
        h = act(nn.Dense(self.tokens_out, name="dense2")(jnp.swapaxes(h, 1, 2)))
        h = jnp.swapaxes(h, 1, 2)
        return h + x if self.shortcut else h


def authors_layer_names(num_layers: int) -> list[str]:
    """Flax names of the authors' layers: ``input``, ``middle_1``, …, ``output``."""
    names = ["input"] + [f"middle_{i}" for i in range(1, num_layers - 1)]
    return names + (["output"] if num_layers > 1 else [])


class TveAuthorsHead(nn.Module):
    """The authors' explainer head: backbone tokens ``[B, T, D]`` (CLS first) ->
    ``[B, num_cells + 1, embed_dim]``, the extra token last (dropped at inference).

    Attributes:
      num_cells: ``S²``.
      embed_dim: ``E``, the target encoder's embedding width.
      num_layers: ``>= 1`` (the authors' ``explainerhead_layernum``).
    """

    num_cells: int
    embed_dim: int
    num_layers: int = 3

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        h = tokens
        tokens_out = self.num_cells + 1
        for name in authors_layer_names(self.num_layers):
            middle = name.startswith("middle")
            h = AuthorsHeadLayer(self.embed_dim, tokens_out, middle, middle, name=name)(h)
        return h


def convert_authors_head(state_dict: dict, num_layers: int) -> dict:
    """The authors' ``ExplainerHead`` state dict (``net.Input Layer.dense1.weight``
    …, numpy arrays) as :class:`TveAuthorsHead` params.

    Raises:
      ValueError: if a key of the ``num_layers`` layers is missing.
    """
    torch_names = ["Input Layer"] + [f"Intermedia Layer {i}" for i in range(1, num_layers - 1)]
    torch_names += ["Output Layer"] if num_layers > 1 else []
    params = {}
    for name, torch_name in zip(authors_layer_names(num_layers), torch_names, strict=True):

        def get(key, torch_name=torch_name):
            full = f"net.{torch_name}.{key}"
            if full not in state_dict:
                raise ValueError(f"state_dict has no {full!r}")
            return jnp.asarray(np.asarray(state_dict[full]))

        params[name] = {
            "layernorm": {"scale": get("layernorm.weight"), "bias": get("layernorm.bias")},
            "dense1": {"kernel": get("dense1.weight").T, "bias": get("dense1.bias")},
            "dense2": {"kernel": get("dense2.weight").T, "bias": get("dense2.bias")},
        }
    return params
