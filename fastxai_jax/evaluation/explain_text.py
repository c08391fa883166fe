"""Token relevance of a text classifier on sentences, and its HTML / JSON outputs.

The library side of ``fastxai explain --text``: :func:`explain_text` scores each
token of each sentence with a text method of
:mod:`fastxai_jax.explainers.registry` (a learned one loaded from its
checkpoint); :func:`save_text` writes the records as ``text.html`` and ``text.json``.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

TEXT_MODELS = ("minilm_classifier",)


def explain_text(
    method: str,
    sentences: Sequence[str],
    weights: str | os.PathLike,
    *,
    model: str = "minilm_classifier",
    options: dict[str, Any] | None = None,
    explainer_ckpt: str | os.PathLike | None = None,
    target: int | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One record per sentence: its tokens, their relevance and the class explained.

    Args:
      method: a text method of ``registry.available_methods("text")`` (any case).
      sentences: the sentences (one batch).
      weights: the classifier's weights (:func:`fastxai_jax.models.load_pretrained`).
      model: the text model (:data:`TEXT_MODELS`).
      options: the method's keyword options.
      explainer_ckpt: a learned method's checkpoint (required for one).
      target: the class explained (default: each sentence's predicted class).
      seed: the key of a stochastic method.

    Returns:
      ``[{"text", "tokens", "relevance", "target", "predicted"}, ...]``.

    Raises:
      ValueError: a model that is not a text model, a method that cannot explain
        text, or a learned method without ``explainer_ckpt``.
    """
    from fastxai_jax.evaluation.text_render import token_strings
    from fastxai_jax.explainers import registry
    from fastxai_jax.explainers.tokens import bert_text_fns
    from fastxai_jax.models import load_pretrained
    from fastxai_jax.models.minilm import load_minilm, load_tokenizer, special_tokens, tokenize

    if model not in TEXT_MODELS:
        raise ValueError(f"--model: --text needs a text model (minilm_classifier); got {model!r}")
    name = method.lower()
    if name not in registry.available_methods("text"):
        known = ", ".join(registry.available_methods("text"))
        raise ValueError(f"--method {method!r} cannot explain text; text methods: {known}")
    if isinstance(sentences, str) or not len(sentences):
        raise ValueError(f"sentences must be a non-empty list of strings; got {sentences!r}")
    tokenizer = load_tokenizer()
    input_ids, attention_mask = tokenize(tokenizer, list(sentences))
    module, variables = load_pretrained(model, weights)
    special = special_tokens(tokenizer)
    fns = bert_text_fns(module, special.mask, (special.cls, special.sep))
    explainer = None
    if name in registry.TOKEN_LEARNED_METHODS:
        from fastxai_jax.explainers.learned import runs

        if not explainer_ckpt:
            raise ValueError(f"--method {name!r} is a learned explainer: pass --explainer-ckpt")
        encoder, _ = load_minilm(num_classes=2)
        explainer = runs.load(explainer_ckpt, fns=fns, module=encoder, method=name)
    logits = fns.apply_embeds(
        variables, fns.embed(variables, jnp.asarray(input_ids)), attention_mask
    )
    predicted = np.asarray(jnp.argmax(logits, axis=-1))
    targets = predicted if target is None else np.full(len(predicted), target)
    spec = registry.TOKEN_METHODS.get(name)
    key = jax.random.key(seed) if spec is not None and spec.needs_key else None
    relevance = np.asarray(
        registry.attribute(
            name,
            fns,
            variables,
            (input_ids, attention_mask),
            targets,
            key=key,
            explainer=explainer,
            **(options or {}),
        )
    )
    records = []
    for i, tokens in enumerate(token_strings(tokenizer, input_ids, attention_mask)):
        records.append(
            {
                "text": sentences[i],
                "tokens": tokens,
                "relevance": relevance[i, : len(tokens)].tolist(),
                "target": int(targets[i]),
                "predicted": int(predicted[i]),
            }  # fmt: skip
        )
    return records


def save_text(out: str | os.PathLike, records: list[dict[str, Any]], title: str) -> pathlib.Path:
    """Writes :func:`explain_text`'s ``records`` as ``OUT/text.html`` (one highlighted
    row per sentence) and ``OUT/text.json``; returns the HTML file's path."""
    from fastxai_jax.evaluation.text_render import html_page, html_sentence

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        (
            f"class {record['target']} (predicted {record['predicted']})",
            html_sentence(record["tokens"], np.asarray(record["relevance"], np.float32)),
        )
        for record in records
    ]
    heading = f"{len(rows)} sentence(s), class explained per row"
    (out / "text.html").write_text(html_page(title, [(heading, rows)]), encoding="utf-8")
    (out / "text.json").write_text(json.dumps(records, indent=1))
    return out / "text.html"
