"""Small heads that sit on top of an explainer backbone.

* :class:`MLPHead` — FEX's actor (on every patch token) and critic (on CLS):
  ``Dense(D) → ReLU → Dense(D) → ReLU → Dense(C)`` (SPEC §2).
"""

from __future__ import annotations

import flax.linen as nn
import jax


class MLPHead(nn.Module):
    """Three-layer MLP ``D→D→ReLU→D→ReLU→C`` applied to the last axis.

    Attributes:
      hidden: width ``D`` of the two hidden layers.
      out: number of outputs ``C``.
    """

    hidden: int
    out: int

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Maps ``[..., D_in]`` features to ``[..., out]``."""
        h = nn.relu(nn.Dense(self.hidden, name="dense0")(tokens))
        h = nn.relu(nn.Dense(self.hidden, name="dense1")(h))
        return nn.Dense(self.out, name="dense2")(h)


class ActorCriticHeads(nn.Module):
    """FEX heads: per-patch actor logits and CLS critic values.

    Attributes:
      hidden: MLP width (the backbone width ``D`` in the paper).
      num_classes: ``C``.
    """

    hidden: int
    num_classes: int

    @nn.compact
    def __call__(self, patch_tokens: jax.Array, cls: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Args: ``patch_tokens [B, L, D]``, ``cls [B, D]``.

        Returns:
          ``(actor_logits [B, L, C], values [B, C])``.
        """
        actor = MLPHead(self.hidden, self.num_classes, name="actor")(patch_tokens)
        critic = MLPHead(self.hidden, self.num_classes, name="critic")(cls)
        return actor, critic
