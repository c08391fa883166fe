"""BERT encoder and sequence classifier (Devlin et al., 2019) in the Hugging
Face ``BertForSequenceClassification`` layout (post-norm blocks, exact GELU,
tanh pooler over the first token).

``__call__(input_ids, train=False, attention_mask=None, token_type_ids=None,
inputs_embeds=None)`` returns ``(logits, aux)`` with
``aux["hidden_states"]`` [B, T, D] (last layer), ``aux["embeddings"]``
[B, T, D] (word-embedding output, the quantity token attributions are taken
against), ``aux["pooled"]`` [B, D] (the tanh pooler over the first token, or with
``pooling="mean"`` the attention-masked mean of the last hidden states, as
sentence-transformers' MiniLM; no pooler parameters then). Passing ``inputs_embeds`` replaces the
word-embedding lookup so gradients can be taken with respect to it; the
attention mask then defaults to all ones unless ``input_ids`` is also given.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

BERT_BASE = dict(
    vocab_size=30522,
    hidden_size=768,
    depth=12,
    num_heads=12,
    mlp_dim=3072,
    max_position_embeddings=512,
    type_vocab_size=2,
)


class BertLayer(nn.Module):
    """Post-norm block: ln(x + attn(x)); ln(h + mlp(h))."""

    hidden_size: int
    num_heads: int
    mlp_dim: int
    layer_norm_eps: float
    dropout_rate: float

    @nn.compact
    def __call__(self, x: jnp.ndarray, key_bias: jnp.ndarray, train: bool) -> jnp.ndarray:
        batch, tokens, _ = x.shape
        head_dim = self.hidden_size // self.num_heads
        drop = nn.Dropout(self.dropout_rate, deterministic=not train)

        def project(name: str) -> jnp.ndarray:
            y = nn.Dense(self.hidden_size, name=name)(x)
            return y.reshape(batch, tokens, self.num_heads, head_dim)

        query, key, value = project("query"), project("key"), project("value")
        logits = jnp.einsum("bqhd,bkhd->bhqk", query * head_dim**-0.5, key)
        weights = drop(jax.nn.softmax(logits + key_bias[:, None, None, :], axis=-1))
        context = jnp.einsum("bhqk,bkhd->bqhd", weights, value).reshape(batch, tokens, -1)
        attended = drop(nn.Dense(self.hidden_size, name="attention_output")(context))
        x = nn.LayerNorm(self.layer_norm_eps, name="attention_layernorm")(x + attended)
        y = nn.gelu(nn.Dense(self.mlp_dim, name="intermediate")(x), approximate=False)
        y = drop(nn.Dense(self.hidden_size, name="output")(y))
        return nn.LayerNorm(self.layer_norm_eps, name="output_layernorm")(x + y)


class MLPHead(nn.Module):
    """``Dense(hidden) → GELU → Dense(num_classes)`` over a pooled embedding ``[B, D]``.

    Attributes:
      hidden: width of the hidden layer.
      num_classes: outputs.
    """

    hidden: int
    num_classes: int

    @nn.compact
    def __call__(self, pooled: jnp.ndarray) -> jnp.ndarray:
        h = nn.gelu(nn.Dense(self.hidden, name="hidden")(pooled), approximate=False)
        return nn.Dense(self.num_classes, name="classifier")(h)


class BertClassifier(nn.Module):
    """``BertForSequenceClassification``: embeddings, encoder, pooler, head.

    Attributes:
      num_classes: number of labels.
      vocab_size, hidden_size, depth, num_heads, mlp_dim,
      max_position_embeddings, type_vocab_size: BERT sizes (base defaults).
      layer_norm_eps: 1e-12 as in Hugging Face.
      dropout_rate: hidden/attention dropout, active only when ``train``.
      pad_token_id: the id whose positions the default attention mask drops.
      pooling: ``"cls"`` (tanh pooler over the first token, Hugging Face) or
        ``"mean"`` (masked mean of the last hidden states, sentence-transformers).
      head_hidden: 0 = a linear ``classifier`` head (Hugging Face); ``> 0`` = an
        :class:`MLPHead` of that width (``head`` in the param tree).
    """

    num_classes: int = 2
    vocab_size: int = 30522
    hidden_size: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dropout_rate: float = 0.1
    pad_token_id: int = 0
    pooling: str = "cls"
    head_hidden: int = 0

    @nn.compact
    def __call__(
        self,
        input_ids: jnp.ndarray | None = None,
        train: bool = False,
        attention_mask: jnp.ndarray | None = None,
        token_type_ids: jnp.ndarray | None = None,
        inputs_embeds: jnp.ndarray | None = None,
    ):
        """Args:
          input_ids: [B, T] int token ids (or None with ``inputs_embeds``).
          train: enables dropout (needs a ``"dropout"`` rng).
          attention_mask: [B, T] 1 = attend; default ``input_ids != pad`` or ones.
          token_type_ids: [B, T] int; default zeros.
          inputs_embeds: [B, T, D] word embeddings replacing the lookup.

        Returns:
          (logits [B, num_classes], aux).
        """
        word_embeddings = nn.Embed(self.vocab_size, self.hidden_size, name="word_embeddings")
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids [B, T] or inputs_embeds [B, T, D]")
            if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
                raise ValueError(
                    f"input_ids must be an int array [B, T]; got {input_ids.dtype} "
                    f"{input_ids.shape}"
                )
            inputs_embeds = word_embeddings(input_ids)
        elif inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.hidden_size:
            raise ValueError(
                f"inputs_embeds must be [B, T, {self.hidden_size}]; got {inputs_embeds.shape}"
            )
        else:
            word_embeddings(jnp.zeros((1, 1), jnp.int32))  # keeps the param in the tree
        batch, tokens = inputs_embeds.shape[:2]
        if tokens > self.max_position_embeddings:
            raise ValueError(
                f"sequence length {tokens} exceeds max_position_embeddings "
                f"{self.max_position_embeddings}"
            )
        if attention_mask is None:
            attention_mask = (
                input_ids != self.pad_token_id
                if input_ids is not None
                else jnp.ones((batch, tokens), bool)
            )
        if token_type_ids is None:
            token_type_ids = jnp.zeros((batch, tokens), jnp.int32)
        positions = nn.Embed(
            self.max_position_embeddings, self.hidden_size, name="position_embeddings"
        )(jnp.arange(tokens)[None, :])
        token_types = nn.Embed(
            self.type_vocab_size, self.hidden_size, name="token_type_embeddings"
        )(token_type_ids)
        x = nn.LayerNorm(self.layer_norm_eps, name="embeddings_layernorm")(
            inputs_embeds + positions + token_types
        )
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        # Hugging Face's additive mask: dtype-min (not -inf) so that an
        # all-padding row stays finite.
        key_bias = jnp.where(attention_mask.astype(bool), 0.0, jnp.finfo(x.dtype).min)
        for i in range(self.depth):
            x = BertLayer(
                self.hidden_size,
                self.num_heads,
                self.mlp_dim,
                self.layer_norm_eps,
                self.dropout_rate,
                name=f"layer_{i}",
            )(x, key_bias, train)
        if self.pooling == "mean":
            weights = attention_mask.astype(x.dtype)[:, :, None]
            pooled = jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
        elif self.pooling == "cls":
            pooled = jnp.tanh(nn.Dense(self.hidden_size, name="pooler")(x[:, 0]))
        else:
            raise ValueError(f"pooling must be 'cls' or 'mean'; got {self.pooling!r}")
        dropped = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled)
        if self.head_hidden < 0:
            raise ValueError(f"head_hidden must be >= 0; got {self.head_hidden!r}")
        if self.head_hidden:
            logits = MLPHead(self.head_hidden, self.num_classes, name="head")(dropped)
        else:
            logits = nn.Dense(self.num_classes, name="classifier")(dropped)
        aux = {"hidden_states": x, "embeddings": inputs_embeds, "pooled": pooled}
        return logits, aux
