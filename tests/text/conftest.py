"""A tiny random BERT and a linear bag-of-embeddings model as text targets."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.explainers.tokens import TextFns, bert_text_fns
from fastxai_jax.models.bert import BertClassifier

PAD, CLS, SEP, MASK = 0, 1, 2, 3


@pytest.fixture(scope="module")
def tiny_bert(tiny_bert_module):
    """``(fns, params)`` of a 2-layer D=16 BERT with 3 classes, vocab 50, 24 positions."""
    module, params = tiny_bert_module
    return bert_text_fns(module, MASK, (CLS, SEP)), params


@pytest.fixture(scope="module")
def tiny_bert_module():
    """``(module, params)`` of the tiny BERT behind :func:`tiny_bert`."""
    module = BertClassifier(
        num_classes=3, vocab_size=50, hidden_size=16, depth=2, num_heads=2, mlp_dim=32,
        max_position_embeddings=24, dropout_rate=0.0,
    )  # fmt: skip
    return module, module.init(jax.random.key(1), jnp.ones((1, 4), jnp.int32))


def make_batch(rows):
    """Right-padded ids and mask from lists of content ids (CLS/SEP added)."""
    length = max(len(r) for r in rows) + 2
    ids = np.zeros((len(rows), length), np.int32)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        seq = [CLS, *r, SEP]
        ids[i, : len(seq)] = seq
        mask[i, : len(seq)] = 1
    return ids, mask


def linear_bag(vocab=20, dim=6, classes=3, seed=0):
    """``f(e) = Σ_t m_t e_t W``: a linear bag-of-embeddings model, ``(fns, params)``."""
    rng = np.random.default_rng(seed)
    params = {
        "E": jnp.asarray(rng.normal(size=(vocab, dim)), jnp.float32),
        "W": jnp.asarray(rng.normal(size=(dim, classes)), jnp.float32),
    }

    def embed(p, ids):
        return p["E"][ids]

    def apply_embeds(p, embeds, mask):
        return jnp.einsum("btd,dk->bk", embeds * mask[:, :, None].astype(embeds.dtype), p["W"])

    return TextFns(embed, apply_embeds, vocab, 16, PAD, MASK, (CLS, SEP)), params


@pytest.fixture(scope="session")
def minilm_classifier(tmp_path_factory):
    """``(workdir, module, variables, fns, tokenizer)`` of the trained ``minilm_classifier``
    (about a CPU minute; the head is cached in ``workdir``)."""
    from fastxai_jax.models.minilm import load_tokenizer
    from fastxai_jax.models.minilm_classifier import train_minilm_classifier

    workdir = tmp_path_factory.mktemp("minilm_classifier")
    seed_dir = os.environ.get("FASTXAI_MINILM_CLASSIFIER_DIR")  # a finished run: resumes in ~2 s
    if seed_dir:
        shutil.copytree(seed_dir, workdir, dirs_exist_ok=True)
    module, variables = train_minilm_classifier(workdir)
    return workdir, module, variables, bert_text_fns(module), load_tokenizer()
