"""Converters for transformer checkpoints: timm and Hugging Face ViT, and
Hugging Face BERT, onto :class:`~fastxai_jax.models.vit.ViT` and
:class:`~fastxai_jax.models.bert.BertClassifier` (see
:mod:`fastxai_jax.models.convert` for the engine and its validation).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fastxai_jax.models.bert import BertClassifier
from fastxai_jax.models.convert import (
    NameFn,
    StateDict,
    convert_state_dict,
    count_indexed,
    require_key,
)
from fastxai_jax.models.vit import HF_LN_EPS, TIMM_LN_EPS, ViT

# --------------------------------------------------------------------------- ViT


def _vit_config(
    state_dict: StateDict, patch_key: str, pos_key: str, head_key: str, fc1_pattern: str
) -> dict:
    patch = require_key(state_dict, patch_key)
    hidden, _, patch_size, _ = patch.shape
    num_positions = require_key(state_dict, pos_key).shape[1] - 1
    grid = int(round(num_positions**0.5))
    if grid * grid != num_positions:
        raise ValueError(f"{pos_key!r} has {num_positions} patch positions, not a square grid")
    depth = count_indexed(state_dict, fc1_pattern)
    if depth == 0:
        raise ValueError(f"state dict is missing key {fc1_pattern % 0!r}")
    return dict(
        hidden_size=hidden,
        patch_size=patch_size,
        image_size=grid * patch_size,
        depth=depth,
        mlp_dim=require_key(state_dict, fc1_pattern % 0).shape[0],
        num_classes=require_key(state_dict, head_key).shape[0],
    )


def _vit_module(config: dict, num_heads: int | None, eps: float, qkv_bias: bool) -> ViT:
    heads = num_heads or max(config["hidden_size"] // 64, 1)
    if config["hidden_size"] % heads:
        raise ValueError(f"num_heads {heads} does not divide hidden size {config['hidden_size']}")
    return ViT(num_heads=heads, layer_norm_eps=eps, qkv_bias=qkv_bias, **config)


def _vit_sample(module: ViT) -> tuple:
    return (jax.ShapeDtypeStruct((1, module.image_size, module.image_size, 3), jnp.float32),)


def _timm_vit_name(path, leaf, kind):
    top = {"patch_embed": "patch_embed.proj", "norm": "norm", "head": "head"}
    if not path:  # cls_token, pos_embed
        return leaf, kind
    if path[0] in top:
        return f"{top[path[0]]}.{leaf}", kind
    block = "blocks." + path[0].split("_")[1]
    if path[1] == "attn":
        if path[2] == "out":
            return f"{block}.attn.proj.{leaf}", kind
        return f"{block}.attn.qkv.{leaf}", ("qkv", ("query", "key", "value").index(path[2]))
    if path[1] in ("fc1", "fc2"):
        return f"{block}.mlp.{path[1]}.{leaf}", kind
    return f"{block}.{path[1]}.{leaf}", kind


def timm_vit_module_for(state_dict: StateDict, num_heads: int | None = None) -> ViT:
    """The :class:`ViT` a timm state dict describes (``num_heads`` default D // 64)."""
    config = _vit_config(
        state_dict, "patch_embed.proj.weight", "pos_embed", "head.weight",
        "blocks.%d.mlp.fc1.weight",
    )  # fmt: skip
    qkv_bias = "blocks.0.attn.qkv.bias" in state_dict
    return _vit_module(config, num_heads, TIMM_LN_EPS, qkv_bias)


def convert_timm_vit(
    state_dict: StateDict, *, num_heads: int | None = None, module: nn.Module | None = None
) -> dict:
    """timm ``VisionTransformer`` (CLS pooling, no fc_norm) -> :class:`ViT` variables.

    The fused ``qkv`` projection is split into query/key/value. ``num_heads``
    cannot be read from the weights; it defaults to ``hidden_size // 64``
    (true for ViT-Ti/S/B/L).
    """
    if module is None:
        module = timm_vit_module_for(state_dict, num_heads)
    return convert_state_dict(state_dict, module, _vit_sample(module), _timm_vit_name)


def _hf_vit_layout(state_dict: StateDict) -> str:
    return "layers" if "vit.layers.0.attention.q_proj.weight" in state_dict else "encoder"


def _hf_vit_name_fn(layout: str) -> NameFn:
    if layout == "layers":  # transformers >= 5
        block_fmt = "vit.layers.{}"
        names = {
            "norm1": "layernorm_before", "norm2": "layernorm_after", "query": "attention.q_proj",
            "key": "attention.k_proj", "value": "attention.v_proj", "out": "attention.o_proj",
            "fc1": "mlp.fc1", "fc2": "mlp.fc2",
        }  # fmt: skip
    else:  # transformers 4.x
        block_fmt = "vit.encoder.layer.{}"
        names = {
            "norm1": "layernorm_before", "norm2": "layernorm_after",
            "query": "attention.attention.query", "key": "attention.attention.key",
            "value": "attention.attention.value", "out": "attention.output.dense",
            "fc1": "intermediate.dense", "fc2": "output.dense",
        }  # fmt: skip
    top = {
        "patch_embed": "vit.embeddings.patch_embeddings.projection",
        "norm": "vit.layernorm",
        "head": "classifier",
    }
    raw = {
        "cls_token": "vit.embeddings.cls_token",
        "pos_embed": "vit.embeddings.position_embeddings",
    }

    def name_fn(path, leaf, kind):
        if not path:
            return raw[leaf], kind
        if path[0] in top:
            return f"{top[path[0]]}.{leaf}", kind
        block = block_fmt.format(path[0].split("_")[1])
        return f"{block}.{names[path[-1]]}.{leaf}", kind

    return name_fn


def hf_vit_module_for(state_dict: StateDict, num_heads: int | None = None) -> ViT:
    """The :class:`ViT` a Hugging Face ViT state dict describes."""
    name_fn = _hf_vit_name_fn(_hf_vit_layout(state_dict))
    fc1 = name_fn(("block_%d", "fc1"), "weight", "dense")[0]
    config = _vit_config(
        state_dict, "vit.embeddings.patch_embeddings.projection.weight",
        "vit.embeddings.position_embeddings", "classifier.weight", fc1,
    )  # fmt: skip
    qkv_bias = name_fn(("block_0", "attn", "query"), "bias", "copy")[0] in state_dict
    return _vit_module(config, num_heads, HF_LN_EPS, qkv_bias)


def convert_hf_vit(
    state_dict: StateDict, *, num_heads: int | None = None, module: nn.Module | None = None
) -> dict:
    """Hugging Face ``ViTForImageClassification`` -> :class:`ViT` variables.

    Reads both the transformers 4.x naming (``vit.encoder.layer.N.attention.
    attention.query``) and the 5.x naming (``vit.layers.N.attention.q_proj``).
    LayerNorm epsilon is 1e-12 (pass ``module`` to use another).
    """
    layout = _hf_vit_layout(state_dict)
    if module is None:
        module = hf_vit_module_for(state_dict, num_heads)
    return convert_state_dict(state_dict, module, _vit_sample(module), _hf_vit_name_fn(layout))


# --------------------------------------------------------------------------- BERT

_BERT_NAMES = {
    "word_embeddings": "bert.embeddings.word_embeddings",
    "position_embeddings": "bert.embeddings.position_embeddings",
    "token_type_embeddings": "bert.embeddings.token_type_embeddings",
    "embeddings_layernorm": "bert.embeddings.LayerNorm",
    "pooler": "bert.pooler.dense",
    "classifier": "classifier",
}
_BERT_LAYER_NAMES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "attention_layernorm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_layernorm": "output.LayerNorm",
}


def _bert_name(path, leaf, kind):
    if path[0] in _BERT_NAMES:
        return f"{_BERT_NAMES[path[0]]}.{leaf}", kind
    layer = path[0].split("_")[1]
    return f"bert.encoder.layer.{layer}.{_BERT_LAYER_NAMES[path[1]]}.{leaf}", kind


def bert_module_for(state_dict: StateDict, num_heads: int | None = None) -> BertClassifier:
    """The :class:`BertClassifier` a Hugging Face BERT state dict describes."""
    words = require_key(state_dict, "bert.embeddings.word_embeddings.weight")
    hidden = words.shape[1]
    return BertClassifier(
        num_classes=require_key(state_dict, "classifier.weight").shape[0],
        vocab_size=words.shape[0],
        hidden_size=hidden,
        depth=count_indexed(state_dict, "bert.encoder.layer.%d.intermediate.dense.weight"),
        num_heads=num_heads or max(hidden // 64, 1),
        mlp_dim=require_key(state_dict, "bert.encoder.layer.0.intermediate.dense.weight").shape[0],
        max_position_embeddings=require_key(
            state_dict, "bert.embeddings.position_embeddings.weight"
        ).shape[0],
        type_vocab_size=require_key(
            state_dict, "bert.embeddings.token_type_embeddings.weight"
        ).shape[0],
    )


def convert_hf_bert(
    state_dict: StateDict, *, num_heads: int | None = None, module: nn.Module | None = None
) -> dict:
    """Hugging Face ``BertForSequenceClassification`` -> :class:`BertClassifier`
    variables. ``num_heads`` defaults to ``hidden_size // 64``."""
    if module is None:
        module = bert_module_for(state_dict, num_heads)
    sample = (jax.ShapeDtypeStruct((1, 4), jnp.int32),)
    return convert_state_dict(state_dict, module, sample, _bert_name)
