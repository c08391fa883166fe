"""Grad-CAM (Selvaraju et al., 2017) on a named feature map.

Grad-CAM takes an ``apply_fn(params, x) -> (logits, aux)`` (big_vision's
model contract): ``aux["features"][name]`` is the feature map ``A`` called
``name``, and ``params["perturbations"][name]``, when present, is added to it
(Flax's ``self.perturb(name, A)``). ``∂y/∂A`` is then the gradient with respect
to a zero perturbation: one forward and one backward pass, no hooks. Every
zoo model keeps this contract (``make_apply_fn(module, family, with_aux=True)``,
or ``module.apply`` on normalised input).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from fastxai_jax.core import check_images, check_target
from fastxai_jax.explainers import _common

# ``apply_fn(params, x) -> (logits [B, K], aux)`` with ``aux["features"]``.
ApplyFnWithAux = Callable[[Any, jax.Array], tuple[jax.Array, Any]]


def _features(apply_fn: ApplyFnWithAux, params: Mapping, x: jax.Array) -> tuple[Any, dict]:
    """Shapes of ``(logits, aux["features"])`` without running the model."""
    out = jax.eval_shape(apply_fn, params, x)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
        raise ValueError(
            "apply_fn must return (logits, aux) with aux['features'] (e.g. "
            "fastxai_jax.models.make_apply_fn(module, family, with_aux=True)); "
            f"got {jax.tree.structure(out)}"
        )
    logits, aux = out
    features = aux.get("features")
    if not isinstance(features, Mapping) or not features:
        raise ValueError("apply_fn's aux has no 'features' dict of feature maps")
    return logits, dict(features)


@functools.partial(jax.jit, static_argnames=("apply_fn", "layer", "relu", "upsample", "score"))
def _gradcam(apply_fn, params, x, target, layer, relu, upsample, score):
    _, features = _features(apply_fn, params, x)
    zeros = {name: jnp.zeros(s.shape, s.dtype) for name, s in features.items()}

    def class_score(perturbation):
        variables = {**params, "perturbations": {**zeros, layer: perturbation}}
        logits, aux = apply_fn(variables, x)
        return jnp.sum(_common.class_score(logits, target, score)), aux["features"][layer]

    (_, feature), grad = jax.value_and_grad(class_score, has_aux=True)(zeros[layer])
    weights = jnp.mean(grad, axis=(1, 2))  # [B, c]: global-average-pooled gradients
    cam = jnp.sum(weights[:, None, None, :] * feature, axis=-1)
    if relu:
        cam = jax.nn.relu(cam)
    if upsample:
        cam = jax.image.resize(cam, (x.shape[0], x.shape[1], x.shape[2]), "bilinear")
    return cam


def gradcam(
    apply_fn: ApplyFnWithAux,
    params: Mapping,
    x: jax.Array,
    target: jax.Array,
    *,
    layer: str,
    relu: bool = True,
    upsample: bool = True,
    score: str = "logit",
    key: Any = None,
) -> jax.Array:
    """Grad-CAM map ``ReLU(Σ_k mean_{ij}(∂y/∂A_k) · A_k)`` on feature map ``layer``.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017.

    Args:
      apply_fn: ``apply_fn(params, x) -> (logits, aux)``; ``aux["features"][layer]``
        is ``A`` and ``params["perturbations"][name]`` is added to each
        ``aux["features"][name]`` (see the module docstring).
      params: a dict of variables (``{"params": ..., ...}``).
      x: ``[B, H, W, C]`` input, as ``apply_fn`` expects it.
      target: ``[B]`` int classes.
      layer: the feature map's name (e.g. ``"layer4"``, ``"head"``).
      relu: apply the ReLU of the paper.
      upsample: bilinearly resize to ``[B, H, W]`` (else the feature grid ``[B, h, w]``).
      score: class score (the paper uses the pre-softmax ``"logit"``).
      key: unused (Grad-CAM is deterministic).

    Returns:
      ``[B, H, W]`` (or ``[B, h, w]``) non-negative map (signed without ``relu``).
    """
    del key
    check_images(x, "x", unit_range=False)  # in apply_fn's input space, maybe normalised
    _common.check_choice("score", score, _common.SCORES)
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a dict of variables; got {type(params).__name__}")
    params = {k: v for k, v in params.items() if k != "perturbations"}
    logits, features = _features(apply_fn, params, x)
    if not isinstance(layer, str) or layer not in features:
        raise ValueError(
            f"layer must name one of aux['features'] {sorted(features)}; got {layer!r}"
        )
    check_target(target, x.shape[0], logits.shape[-1])
    return _gradcam(apply_fn, params, x, target, layer, bool(relu), bool(upsample), score)


def gradcam_method(
    apply_fn: ApplyFnWithAux,
    params: Mapping,
    x: jax.Array,
    target: jax.Array,
    *,
    key: Any = None,
    layer: str | None = None,
    module: Any = None,
    family: str | None = None,
    **options: Any,
) -> jax.Array:
    """Registry form of :func:`gradcam`: ``attribute("gradcam", apply_fn, ..., layer=)``.

    ``apply_fn`` returns ``(logits, aux)``. Transition shim: callers that still
    pass ``module=`` and ``family=`` get ``make_apply_fn(module, family,
    with_aux=True)`` in place of ``apply_fn``.
    """
    check_images(x, "x")  # the registry's contract: [0, 1] images
    if layer is None:
        raise ValueError("gradcam needs layer=<feature map name>")
    if module is not None:
        from fastxai_jax.models.zoo import make_apply_fn

        if family is None:
            raise ValueError("gradcam with module= needs family=<normalisation family>")
        apply_fn = make_apply_fn(module, family, with_aux=True)
    return gradcam(apply_fn, params, x, target, layer=layer, key=key, **options)
