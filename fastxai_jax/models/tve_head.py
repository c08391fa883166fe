"""TVE's two-axis mixing head (Wang et al., ICML 2024; SPEC §5).

Each layer mixes along the hidden axis and then along the token axis:
``LayerNorm → Linear over hidden → GELU → transpose → Linear over tokens →
GELU → transpose``. The first layer maps ``[L, D]`` backbone tokens to
``[S², hidden]`` cells, the middle layers are residual, and a final LayerNorm
+ Linear gives the predicted target-encoder embedding ``[S², E]`` per cell.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class MixingLayer(nn.Module):
    """One hidden-then-token mixing layer: ``[B, T, D] -> [B, tokens_out, hidden_out]``."""

    hidden_out: int
    tokens_out: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.LayerNorm(name="norm")(x)
        h = nn.gelu(nn.Dense(self.hidden_out, name="hidden_mix")(h))
        h = jnp.swapaxes(h, 1, 2)  # [B, hidden, T]
        h = nn.gelu(nn.Dense(self.tokens_out, name="token_mix")(h))
        return jnp.swapaxes(h, 1, 2)


class TveHead(nn.Module):
    """Per-cell embedding predictor.

    Attributes:
      num_cells: ``S²`` output cells.
      embed_dim: ``E``, the target encoder's embedding width.
      hidden: width of the mixing layers.
      num_layers: mixing layers (>= 1); all but the first are residual.
    """

    num_cells: int
    embed_dim: int
    hidden: int = 128
    num_layers: int = 3

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Maps backbone tokens ``[B, L, D]`` to ``[B, num_cells, embed_dim]``."""
        h = MixingLayer(self.hidden, self.num_cells, name="mix_0")(tokens)
        for i in range(1, self.num_layers):
            h = h + MixingLayer(self.hidden, self.num_cells, name=f"mix_{i}")(h)
        h = nn.LayerNorm(name="out_norm")(h)
        return nn.Dense(self.embed_dim, name="out")(h)
