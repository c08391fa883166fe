"""BERT: inputs_embeds path, padding invariance, input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.models import build, random_variables


@pytest.fixture(scope="module")
def small_bert():
    module, family = build(
        "bert", num_classes=3, vocab_size=50, hidden_size=16, depth=2, num_heads=2, mlp_dim=32,
        max_position_embeddings=12,
    )  # fmt: skip
    assert family == "text"
    ids = jnp.asarray([[5, 9, 3, 7, 0, 0], [4, 4, 8, 1, 2, 6]], jnp.int32)
    return module, random_variables(module, ids, seed=2), ids


def _apply(module):
    return jax.jit(lambda v, ids=None, **kw: module.apply(v, ids, **kw))


def test_inputs_embeds_equal_token_ids_and_are_differentiable(small_bert):
    module, variables, ids = small_bert
    apply = _apply(module)
    logits, aux = apply(variables, ids)
    assert aux["hidden_states"].shape == aux["embeddings"].shape == (2, 6, 16)
    table = variables["params"]["word_embeddings"]["embedding"]
    np.testing.assert_array_equal(aux["embeddings"], table[ids])
    same, _ = apply(variables, inputs_embeds=aux["embeddings"], attention_mask=ids != 0)
    np.testing.assert_allclose(same, logits, atol=1e-6)

    def logit(embeds):
        return module.apply(variables, inputs_embeds=embeds, attention_mask=ids != 0)[0][:, 1].sum()

    grad = jax.jit(jax.grad(logit))(aux["embeddings"])
    assert np.all(np.isfinite(np.asarray(grad)))
    # padded positions are masked as keys and never reach the CLS token
    np.testing.assert_allclose(grad[0, 4:], 0.0, atol=1e-7)
    assert np.abs(np.asarray(grad[0, :4])).max() > 1e-6


def test_trailing_padding_does_not_change_logits(small_bert):
    module, variables, ids = small_bert
    apply = _apply(module)
    short = apply(variables, ids[:1, :4])[0]
    padded = apply(variables, ids[:1])[0]
    np.testing.assert_allclose(short, padded, atol=1e-5)


def test_bad_inputs(small_bert):
    module, variables, ids = small_bert
    apply = _apply(module)
    with pytest.raises(ValueError, match="input_ids"):
        apply(variables, ids.astype(jnp.float32))
    with pytest.raises(ValueError, match="inputs_embeds"):
        apply(variables, inputs_embeds=jnp.zeros((1, 3, 8)))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        apply(variables, jnp.ones((1, 13), jnp.int32))


def test_bert_base_parameter_count():
    """bert-base-uncased BertModel has 109,482,240 params, + a 2-way head."""
    module, _ = build("bert", num_classes=2)
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.ones((1, 4), jnp.int32))
    assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)) == 109_482_240 + 1538
