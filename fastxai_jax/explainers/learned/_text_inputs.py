"""The learned token explainers' shared input checks (FEX and FastSHAP over tokens).

Split out of :mod:`~fastxai_jax.explainers.learned.fex_text`, which re-exports
:func:`token_input_check` and :func:`check_init`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fastxai_jax.explainers.tokens import TextFns, check_tokens, content_mask


def token_batch(x: Any, name: str) -> tuple[Any, Any]:
    if isinstance(x, dict):
        if "input_ids" not in x or "attention_mask" not in x:
            raise ValueError(f"{name} must hold 'input_ids' and 'attention_mask'; got {sorted(x)}")
        return x["input_ids"], x["attention_mask"]
    if isinstance(x, tuple | list) and len(x) == 2:
        return x[0], x[1]
    raise ValueError(
        f"{name} must be (input_ids, attention_mask) or a dict of them; got {type(x).__name__}"
    )


def token_input_check(fns: Any, vocab: Any, module: Any) -> Any:
    """``checked(x, name) -> (ids, mask, content)``: a ``(input_ids, attention_mask)``
    batch (tuple or dict) validated against ``vocab or fns`` (the learned token
    explainers' shared input check; ``module`` must be given)."""
    vocab = vocab or fns
    if not isinstance(vocab, TextFns):
        raise ValueError(f"fns must be a TextFns (or pass vocab=); got {type(vocab).__name__}")
    if module is None:
        raise ValueError("module is required (the explainer transformer, e.g. load_minilm()[0])")

    def checked(x: Any, name: str):
        ids, mask = token_batch(x, name)
        check_tokens(vocab, ids, mask)
        ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)
        return ids, mask, content_mask(vocab, ids, mask)

    return checked


def check_init(fns, target_params, backbone_params, ids, mask, num_classes: int) -> None:
    """``init_params``' checks: the backbone weights are given and the target
    (when given) returns ``[B, num_classes]`` logits."""
    if backbone_params is None:
        raise ValueError("backbone_params is required to initialise the token explainer")
    if fns is not None:
        logits = jax.eval_shape(
            fns.apply_embeds, target_params, fns.embed(target_params, ids), mask
        )
        if logits.shape != (ids.shape[0], num_classes):
            raise ValueError(
                f"fns must return logits ({ids.shape[0]}, {num_classes}); got {logits.shape}"
            )
