"""Grad-CAM (Selvaraju et al., 2017) on a named feature map.

Models call ``self.perturb(name, feature)`` on the maps they expose (and return
them in ``aux["features"][name]``), so the gradient of the class score with
respect to a feature map is the gradient with respect to a zero
``'perturbations'`` variable of the same shape: one forward and one backward
pass, no hooks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

from fastxai_jax.core import check_images, check_target
from fastxai_jax.explainers import _common
from fastxai_jax.models.normalization import normalise


def _perturbation_path(model_apply, variables, x, layer, model_kwargs) -> tuple:
    """The flattened path of the ``'perturbations'`` leaf named ``layer``."""
    plain = {k: v for k, v in variables.items() if k != "perturbations"}
    _, state = jax.eval_shape(
        lambda v, xs: model_apply(v, xs, mutable=["perturbations"], **model_kwargs), plain, x
    )
    flat = traverse_util.flatten_dict(dict(state.get("perturbations", {})))
    matches = [p for p in flat if "/".join(p) == layer or p[-1] == layer]
    if len(matches) != 1:
        names = sorted("/".join(p) for p in flat)
        raise ValueError(
            f"layer must name one perturbed feature map of the model; got {layer!r}, "
            f"available: {names}"
        )
    return matches[0], flat


@functools.partial(
    jax.jit, static_argnames=("model_apply", "layer", "relu", "upsample", "score", "model_kwargs")
)
def _gradcam(model_apply, variables, x, target, layer, relu, upsample, score, model_kwargs):
    kwargs = dict(model_kwargs)
    path, flat = _perturbation_path(model_apply, variables, x, layer, kwargs)
    zeros = {p: jnp.zeros(s.shape, s.dtype) for p, s in flat.items()}
    plain = {k: v for k, v in variables.items() if k != "perturbations"}

    def class_score(perturbation):
        perts = traverse_util.unflatten_dict({**zeros, path: perturbation})
        logits, aux = model_apply({**plain, "perturbations": perts}, x, **kwargs)
        feature = aux["features"][path[-1]]
        return jnp.sum(_common.class_score(logits, target, score)), feature

    (_, feature), grad = jax.value_and_grad(class_score, has_aux=True)(zeros[path])
    weights = jnp.mean(grad, axis=(1, 2))  # [B, c]: global-average-pooled gradients
    cam = jnp.sum(weights[:, None, None, :] * feature, axis=-1)
    if relu:
        cam = jax.nn.relu(cam)
    if upsample:
        cam = jax.image.resize(cam, (x.shape[0], x.shape[1], x.shape[2]), "bilinear")
    return cam


def gradcam(
    model_apply: Callable[..., Any],
    variables: Any,
    x: jax.Array,
    target: jax.Array,
    *,
    layer: str,
    relu: bool = True,
    upsample: bool = True,
    score: str = "logit",
    model_kwargs: tuple[tuple[str, Any], ...] = (("train", False),),
) -> jax.Array:
    """Grad-CAM map ``ReLU(Σ_k mean_{ij}(∂y/∂A_k) · A_k)`` on feature map ``layer``.

    Args:
      model_apply: a Flax ``module.apply`` returning ``(logits, aux)`` with
        ``aux["features"][layer]`` passed through ``self.perturb(layer, ...)``.
      variables: the module's variables (``{"params": ..., ...}``).
      x: ``[B, H, W, C]`` model input (already normalised, as ``model_apply`` expects).
      target: ``[B]`` int classes.
      layer: the feature map's name (e.g. ``"layer4"``, ``"conv_last"``).
      relu: apply the ReLU of the paper.
      upsample: bilinearly resize to ``[B, H, W]`` (else the feature grid ``[B, h, w]``).
      score: class score (the paper uses the pre-softmax ``"logit"``).
      model_kwargs: extra keyword arguments for ``model_apply`` as ``(name, value)`` pairs.

    Returns:
      ``[B, H, W]`` (or ``[B, h, w]``) non-negative map (signed without ``relu``).
    """
    check_images(x, "x")
    _common.check_choice("score", score, _common.SCORES)
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"layer must be a feature-map name; got {layer!r}")
    plain = {k: v for k, v in dict(variables).items() if k != "perturbations"}
    (logits, _), _ = jax.eval_shape(
        lambda v, xs: model_apply(v, xs, mutable=["perturbations"], **dict(model_kwargs)), plain, x
    )
    check_target(target, x.shape[0], logits.shape[-1])
    return _gradcam(
        model_apply, plain, x, target, layer, bool(relu), bool(upsample), score, tuple(model_kwargs)
    )


def gradcam_method(
    apply_fn: Any,
    params: Any,
    x: jax.Array,
    target: jax.Array,
    *,
    key: Any = None,
    module: Any = None,
    layer: str | None = None,
    family: str | None = None,
    **options: Any,
) -> jax.Array:
    """Registry form of :func:`gradcam`: ``attribute("gradcam", ..., module=, layer=, family=)``.

    ``params`` are the module's variables; ``x`` is in [0, 1] and is normalised
    with ``family`` (as ``fastxai_jax.models.make_apply_fn`` does) before
    ``module.apply``. ``apply_fn`` is not used.
    """
    del apply_fn, key
    if module is None or layer is None:
        raise ValueError("gradcam needs module=<flax module> and layer=<feature map name>")
    if family is None:
        raise ValueError("gradcam needs family=<normalisation family> (e.g. 'imagenet')")
    return gradcam(module.apply, params, normalise(x, family), target, layer=layer, **options)
