"""The sharded explain-and-score step: one jitted call per shard over a global mesh.

The batch axis is split over the mesh's ``"data"`` axis, params are
replicated, and the method runs per image under ``vmap`` with the key
``fold_in(method_key, global_index)``, so an image's attribution and scores
depend on neither the device count nor the batch it lands in (the jit-over-
``NamedSharding`` form of data parallelism; see STYLE.md rule 4).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fastxai_jax.core import ApplyFn, LearnedExplainer
from fastxai_jax.train.sharding import DATA_AXIS

__all__ = [
    "MASK_METRICS",
    "available_metrics",
    "lookup_method",
    "lookup_metric",
    "make_step",
    "method_key",
    "metric_option_names",
]


def lookup_method(name: str) -> Any:
    """The table entry of ``name``: a per-input method's
    ``fn(apply_fn, params, x, target, *, key, **options)``, or a learned
    method's :class:`~fastxai_jax.explainers.registry.LearnedSpec`.

    The one place where the sweep reads the method table
    (:mod:`fastxai_jax.explainers.registry`).

    Raises:
      ValueError: an unknown name.
    """
    from fastxai_jax.explainers import registry

    if registry.is_learned(name):
        return registry.get_learned(name)
    return registry.get_method(name).fn


def _insertion_deletion(apply_fn, params, x, attribution, target, **options):
    from fastxai_jax.metrics import insertion_deletion

    curves = insertion_deletion(apply_fn, params, x, attribution, target, **options)
    return {"insertion_auc": curves["insertion"].auc, "deletion_auc": curves["deletion"].auc}


def _pos_neg(apply_fn, params, x, attribution, target, **options):
    from fastxai_jax.metrics import pos_neg_perturbation

    curves = pos_neg_perturbation(apply_fn, params, x, attribution, target, **options)
    return {"pos_auc": curves["pos"].auc, "neg_auc": curves["neg"].auc}


def _complexity(name: str) -> Callable[..., dict[str, jax.Array]]:
    def score(apply_fn, params, x, attribution, target, **options):
        from fastxai_jax import metrics

        del apply_fn, params, x, target
        return {name: getattr(metrics, name)(attribution, **options)}

    return score


def _localisation(name: str) -> Callable[..., dict[str, jax.Array]]:
    """A map-vs-mask metric of :mod:`fastxai_jax.metrics.localisation` (no model query)."""

    def score(apply_fn, params, x, attribution, target, *, ground_truth, **options):
        from fastxai_jax.metrics import localisation

        del apply_fn, params, x, target
        return {name: getattr(localisation, name)(attribution, ground_truth, **options)}

    return score


def _segmentation(apply_fn, params, x, attribution, target, *, ground_truth, **options):
    from fastxai_jax.metrics import segmentation_scores

    del apply_fn, params, x, target
    result = segmentation_scores(attribution, ground_truth, **options)
    return {
        "pixel_accuracy": result.pixel_accuracy,
        "miou": result.miou,
        "average_precision": result.average_precision,
    }


_METRICS: dict[str, Callable[..., dict[str, jax.Array]]] = {
    "insertion_deletion": _insertion_deletion,
    "pos_neg": _pos_neg,
    "sparseness": _complexity("sparseness"),
    "entropy": _complexity("entropy"),
    "pointing_game": _localisation("pointing_game"),
    "iou": _localisation("iou"),
    "relevance_mass": _localisation("relevance_mass"),
    "segmentation": _segmentation,
}

#: Metrics scored against the data's ground-truth object masks (``data`` must carry them).
MASK_METRICS = frozenset({"pointing_game", "iou", "relevance_mass", "segmentation"})


#: The library function behind each metric (its keyword options are the metric's options).
_LIBRARY = {
    "insertion_deletion": "insertion_deletion",
    "pos_neg": "pos_neg_perturbation",
    "sparseness": "sparseness",
    "entropy": "entropy",
    "pointing_game": "pointing_game",
    "iou": "iou",
    "relevance_mass": "relevance_mass",
    "segmentation": "segmentation_scores",
}


def metric_option_names(name: str) -> set[str]:
    """The options a metric accepts: its library function's keyword-only arguments."""
    import inspect

    from fastxai_jax import metrics

    parameters = inspect.signature(getattr(metrics, _LIBRARY[name])).parameters.values()
    return {p.name for p in parameters if p.kind == p.KEYWORD_ONLY} - {"key"}


def available_metrics() -> list[str]:
    """Metric names a sweep config may use."""
    return sorted(_METRICS)


def lookup_metric(name: str) -> Callable[..., dict[str, jax.Array]]:
    """``score(apply_fn, params, x, attribution, target, **options) -> {column: [B]}``.

    A metric in :data:`MASK_METRICS` also takes ``ground_truth=[B, H, W]`` bool masks.
    """
    if name not in _METRICS:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(available_metrics())}")
    return _METRICS[name]


def method_key(seed: int, method_label: str) -> jax.Array:
    """The base key of one method: ``fold_in(key(seed), crc32(label))`` (order-free)."""
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(method_label.encode()) & 0x7FFFFFFF)


def make_step(
    apply_fn: ApplyFn,
    method: str,
    method_options: Mapping[str, Any],
    metrics: list[tuple[str, Mapping[str, Any]]],
    mesh: Mesh,
    *,
    target_mode: str = "predicted",
    explainer: LearnedExplainer | None = None,
) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
    """Builds ``step(params, images, labels, index, key[, masks]) -> (attribution, columns)``.

    For a learned method, ``params`` is the pair ``(target params, explainer
    params)`` (both replicated, so one compile serves any trained weights);
    the explainer's ``explain`` runs on the whole batch with the step's target
    (``None`` for a method that does not condition on a class, LTX).

    Args:
      apply_fn: ``apply_fn(params, x) -> logits [B, K]``.
      method: a method name (see :func:`lookup_method`).
      method_options: the method's options (static; none for a learned method).
      metrics: ``[(metric name, options)]`` (see :func:`lookup_metric`).
      mesh: a mesh with a ``"data"`` axis; the global batch must be divisible
        by its size.
      target_mode: ``"predicted"`` (ŷ = argmax f(x)) or ``"label"``.
      explainer: the :class:`~fastxai_jax.core.LearnedExplainer` of a learned
        ``method`` (``runs.load(...).explainer``); ``None`` for per-input ones.

    Returns:
      A jitted step over ``images [B, H, W, C]``, ``labels [B]`` int,
      ``index [B]`` int (global image indices), the method's base key and,
      when a metric is in :data:`MASK_METRICS`, ``masks [B, H, W]`` bool (the
      ground truth); outputs are sharded over ``"data"``: the attribution
      ``[B, H, W]`` and ``{"label", "target", "predicted", <metric columns>}``
      each ``[B]``.
    """
    if target_mode not in ("predicted", "label"):
        raise ValueError(f"target_mode must be 'predicted' or 'label'; got {target_mode!r}")
    from fastxai_jax.explainers.registry import is_learned

    entry = lookup_method(method)
    learned = is_learned(method)
    if learned and not isinstance(explainer, LearnedExplainer):
        raise ValueError(
            f"explainer: learned method {method!r} needs its LearnedExplainer "
            f"(runs.load(workdir).explainer); got {type(explainer).__name__}"
        )
    if learned and method_options:
        raise ValueError(f"method_options: learned method {method!r} takes none")
    if not learned and explainer is not None:
        raise ValueError(f"explainer: {method!r} is a per-input method; pass None")
    method_fn = None if learned else functools.partial(entry, **dict(method_options))
    scorers = [
        (name in MASK_METRICS, functools.partial(lookup_metric(name), **dict(opts)))
        for name, opts in metrics
    ]
    use_masks = any(needs for needs, _ in scorers)

    def explain_one(params, image, target, key):
        return method_fn(apply_fn, params, image[None], target[None], key=key)[0]

    def explain_learned(explainer_params, images, target):
        chosen = target if explainer.conditions_on_class else None
        return explainer.explain(explainer_params, images, chosen)

    def step(params, images, labels, index, key, masks=None):
        params, explainer_params = params if learned else (params, None)
        predicted = jnp.argmax(apply_fn(params, images), axis=-1).astype(jnp.int32)
        target = predicted if target_mode == "predicted" else labels.astype(jnp.int32)
        if learned:
            attribution = explain_learned(explainer_params, images, target)
        else:
            keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
            attribution = jax.vmap(explain_one, in_axes=(None, 0, 0, 0))(
                params, images, target, keys
            )
        columns = {"label": labels.astype(jnp.int32), "target": target, "predicted": predicted}
        for needs_masks, scorer in scorers:
            extra = {"ground_truth": masks} if needs_masks else {}
            columns.update(scorer(apply_fn, params, images, attribution, target, **extra))
        return attribution, columns

    data = NamedSharding(mesh, P(DATA_AXIS))
    replicated = NamedSharding(mesh, P())
    return jax.jit(
        step,
        in_shardings=(replicated, data, data, data, replicated) + ((data,) if use_masks else ()),
        out_shardings=(data, data),
    )
