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
