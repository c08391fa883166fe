"""SST-2 (``glue/sst2``) through ``tfds.data_source``, tokenized for a text target.

Reads the split prepared in the user's TFDS data dir (array_record) with
:func:`fastxai_jax.data.tfds_sources.load_split`, then tokenizes the sentences
with a ``tokenizers`` tokenizer (e.g. MiniLM's) into padded ids and masks.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from fastxai_jax.data.tfds_sources import load_split
from fastxai_jax.models.minilm import tokenize


class TokenizedSplit(NamedTuple):
    """Sentences with labels, ids ``[N, T]`` and attention mask ``[N, T]``."""

    texts: list[str]
    labels: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray


def load_sst2_tokens(
    split: str,
    tokenizer: Any,
    *,
    num_examples: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> TokenizedSplit:
    """The first ``num_examples`` sentences of a ``glue/sst2`` split, tokenized.

    Args:
      split: ``"train"``, ``"validation"`` or ``"test"`` (test labels are -1).
      tokenizer: a padding ``tokenizers.Tokenizer``
        (:func:`fastxai_jax.models.minilm.load_tokenizer`).
      num_examples: how many (default: the whole split).
      data_dir: TFDS data dir holding the prepared dataset.

    Returns:
      A :class:`TokenizedSplit`.
    """
    source = load_split("glue/sst2", split, data_dir=data_dir)
    count = len(source) if num_examples is None else min(int(num_examples), len(source))
    if count < 1:
        raise ValueError(f"num_examples must be a positive int; got {num_examples!r}")
    examples = [source[i] for i in range(count)]
    texts = [
        e["sentence"].decode("utf-8") if isinstance(e["sentence"], bytes) else str(e["sentence"])
        for e in examples
    ]
    input_ids, attention_mask = tokenize(tokenizer, texts)
    labels = np.asarray([e["label"] for e in examples], np.int32)
    return TokenizedSplit(texts, labels, input_ids, attention_mask)
