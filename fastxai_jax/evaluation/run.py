"""The evaluation harness: methods × images → per-image scores, costs and times (SPEC §7).

For every method: insertion/deletion AUC (RISE protocol), POS/NEG AUC (LTX),
ADP/PIC, pointing game, IoU, relevance mass, segmentation AP, sparseness,
entropy, and cost (time per input, peak memory, target-model passes).

Inputs are validated once, at :func:`evaluate_methods`, and the explained class
is resolved per batch before the clock starts: the timed region holds only the
method's compute (blocked on with ``block_until_ready``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax import metrics
from fastxai_jax.core import ApplyFn, Cost, Params, check_images, check_range, resolve_target
from fastxai_jax.evaluation import _learned
from fastxai_jax.evaluation.protocol import Protocol
from fastxai_jax.explainers import rise

CURVES = ("insertion", "deletion", "pos", "neg")


def to_pixels(attribution: jax.Array, image_hw: tuple[int, int]) -> jax.Array:
    """``[B, H, W]`` map for localisation: channels summed, a grid upsampled nearest."""
    if attribution.ndim == 4:
        attribution = jnp.sum(attribution, axis=-1)
    if attribution.shape[1:] != tuple(image_hw):
        rows = (np.arange(image_hw[0]) * attribution.shape[1]) // image_hw[0]
        cols = (np.arange(image_hw[1]) * attribution.shape[2]) // image_hw[1]
        attribution = attribution[:, rows][:, :, cols]
    return attribution


def score_batch(apply_fn, params, x, attribution, masks, protocol: Protocol) -> dict[str, Any]:
    """Per-input scores and curves of one batch: ``{"scores": {name: [B]}, "curves"}``."""
    image_hw = x.shape[1:3]
    pixel_map = to_pixels(attribution, image_hw)
    is_grid = attribution.ndim == 3 and attribution.shape[1:] != tuple(image_hw)
    granularity = "grid" if is_grid else protocol.granularity
    curve_map = attribution if is_grid else pixel_map
    ins_del = metrics.insertion_deletion(
        apply_fn,
        params,
        x,
        curve_map,
        granularity=granularity,
        patch_size=protocol.patch_size,
        num_steps=protocol.num_steps,
        step_size=protocol.step_size if granularity == "pixel" else None,
        insertion_substrate=protocol.insertion_substrate,
        deletion_substrate=protocol.deletion_substrate,
        normalisation=protocol.normalisation,
        score=protocol.score,
    )
    patch = protocol.patch
    if patch is not None:  # e.g. the FEX paper's: patches of the pixel map, few steps
        patch_curves = metrics.insertion_deletion(
            apply_fn,
            params,
            x,
            pixel_map,
            granularity="patch",
            patch_size=patch.patch_size,
            num_steps=patch.num_steps,
            insertion_substrate=patch.substrate,
            deletion_substrate=patch.substrate,
            normalisation=protocol.normalisation,
            score=protocol.score,
        )
    pos_neg = metrics.pos_neg_perturbation(apply_fn, params, x, pixel_map)
    adp = metrics.adp_pic(apply_fn, params, x, pixel_map)
    seg = metrics.segmentation_scores(pixel_map, masks)
    scores = {
        "insertion_auc": ins_del["insertion"].auc,
        "deletion_auc": ins_del["deletion"].auc,
        "pos_auc": pos_neg["pos"].auc,
        "neg_auc": pos_neg["neg"].auc,
        "adp": adp.adp,
        "pic": adp.pic,
        "pointing_game": metrics.pointing_game(pixel_map, masks),
        "iou": metrics.iou(pixel_map, masks, threshold=protocol.iou_threshold),
        "relevance_mass": metrics.relevance_mass(pixel_map, masks),
        "segmentation_ap": seg.average_precision,
        "sparseness": metrics.sparseness(pixel_map),
        "entropy": metrics.entropy(pixel_map),
    }
    if patch is not None:
        scores["patch_insertion_auc"] = patch_curves["insertion"].auc
        scores["patch_deletion_auc"] = patch_curves["deletion"].auc
    return {"scores": scores, "curves": {**ins_del, **pos_neg}}


def takes_image_keys(method: str) -> bool:
    """Whether ``method`` takes ``[B]`` per-image keys (RISE): a dataset explained
    batch by batch then gets maps independent of the batch size (issue 20)."""
    from fastxai_jax.explainers import registry

    return registry.get_method(method).fn is rise.rise


def _compute(spec) -> Callable[..., Any]:
    """The method's compute on validated inputs (``x`` checked, ``target`` resolved).

    Re-point to the registry's raw (non-validating) compute once it has one.
    """
    return spec.fn


def _validate(images, masks, methods, explainers, protocol, method_options, batch_size):
    from fastxai_jax.explainers import registry

    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty [N, H, W, C] batch; got {images.shape}")
    check_images(images, "images")
    check_range(images, "images")
    if masks.shape != images.shape[:3]:
        raise ValueError(f"masks must have shape {images.shape[:3]}; got {masks.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if not methods and not explainers:
        raise ValueError("methods must name at least one method")
    if protocol is None:
        protocol = Protocol()
    if not isinstance(protocol, Protocol):
        raise ValueError(f"protocol must be a Protocol; got {type(protocol).__name__}")
    specs = {method: registry.get_method(method) for method in methods}  # unknown names fail
    return images, masks.astype(bool), protocol, specs, dict(method_options or {})


def _declared(spec, options: dict[str, Any]) -> Cost:
    """The method's declared cost with ``options``; ``Cost(-1, -1)`` (unknown) when its
    cost function does not take them."""
    try:
        return spec.cost(**options)
    except (ValueError, TypeError):
        return Cost(-1, -1)


def evaluate_methods(
    apply_fn: ApplyFn,
    params: Params,
    images: Any,
    masks: Any,
    methods: list[str],
    *,
    key: jax.Array,
    batch_size: int = 16,
    protocol: Protocol | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    explainers: dict[str, Callable[..., Any]] | None = None,
    explainer_costs: dict[str, Cost] | None = None,
    progress: bool = True,
    return_maps: bool = False,
):
    """Scores each method on ``images`` against ground-truth ``masks``.

    Args:
      apply_fn: ``apply_fn(params, x01) -> logits``.
      params: target parameters.
      images: ``[N, H, W, C]`` in ``[0, 1]``.
      masks: ``[N, H, W]`` bool ground truth (planted objects).
      methods: per-input method names (``fastxai_jax.explainers.registry``).
      key: PRNG key (folded per method, then per batch, or per image index for
        methods taking per-image keys: RISE's maps do not change with ``batch_size``).
      batch_size: images per batch.
      protocol: how curves are scored (default :class:`Protocol`, RISE's).
      method_options: ``{method: options}`` passed to the method.
      explainers: learned explainers scored after ``methods``, as ``{name:
        explain(x, target) -> map}``; they explain the target's predicted class.
      explainer_costs: their target passes per input (default: the declared value,
        :func:`fastxai_jax.evaluation._learned.declared_cost`).
      progress: show a tqdm bar.
      return_maps: also return ``{method: [N, H, W] maps}``.

    Returns:
      ``(summary, curves)``: ``summary[method]`` maps metric → dataset mean
      (plus cost figures, and ``"per_input"``: metric → per-image scores in image
      order, for :func:`fastxai_jax.metrics.paired_difference`);
      ``curves[method][name]`` is ``{"fractions", "mean"}``;
      with ``return_maps``, ``(summary, curves, maps)``.
    """
    from tqdm import tqdm

    explainers = dict(explainers or {})
    images, masks, protocol, specs, method_options = _validate(
        images, masks, methods, explainers, protocol, method_options, batch_size
    )
    costs = {name: _learned.declared_cost(name) for name in explainers}
    costs.update(explainer_costs or {})
    starts = list(range(0, images.shape[0], batch_size))
    names = list(methods) + list(explainers)
    bar = tqdm(total=len(names) * len(starts), disable=not progress, desc="evaluate")
    summary, all_curves, all_maps = {}, {}, {}
    predict = jax.jit(lambda x: jnp.argmax(apply_fn(params, x), axis=-1))
    for method_index, method in enumerate(names):
        options = method_options.get(method, {})
        if method in explainers:
            cost = costs[method]
        else:
            cost = _declared(specs[method], options)
        per_input: dict[str, list] = {}
        curve_rows: dict[str, list] = {name: [] for name in CURVES}
        fractions: dict[str, np.ndarray] = {}
        elapsed, record, compiled_shapes = 0.0, None, set()
        for batch_index, start in enumerate(starts):
            x = jnp.asarray(images[start : start + batch_size])
            method_key = jax.random.fold_in(key, method_index)
            if method not in explainers and takes_image_keys(method):
                batch_key = rise.image_keys(method_key, start, x.shape[0])  # per image index
            else:
                batch_key = jax.random.fold_in(method_key, batch_index)
            # Untimed: the explained class (a target forward) and the call's arguments.
            if method in explainers:
                target = predict(x)
                call = lambda x=x, target=target, fn=explainers[method]: fn(x, target)
            else:
                spec = specs[method]
                target = resolve_target(apply_fn, params, x, None)
                call_key = batch_key if spec.needs_key else None
                fn = _compute(spec)
                call = lambda x=x, t=target, k=call_key, fn=fn, o=options: fn(
                    apply_fn, params, x, t, key=k, **o
                )
            attribution, record = metrics.measure_cost(
                call,
                num_inputs=x.shape[0],
                warmup=x.shape not in compiled_shapes,  # compile (each batch shape) untimed
            )
            record = record._replace(
                method=method, forward_passes=int(cost.forward), backward_passes=int(cost.backward)
            )
            attribution = jnp.asarray(attribution)
            if return_maps:
                all_maps.setdefault(method, []).append(
                    np.asarray(to_pixels(attribution, x.shape[1:3]))
                )
            compiled_shapes.add(x.shape)
            elapsed += record.time_per_input_s * x.shape[0]
            batch = score_batch(
                apply_fn, params, x, attribution, masks[start : start + batch_size], protocol
            )
            for name, values in batch["scores"].items():
                per_input.setdefault(name, []).append(np.asarray(values, np.float64))
            for name in CURVES:
                curve_rows[name].append(np.asarray(batch["curves"][name].curve, np.float64))
                fractions[name] = batch["curves"][name].fractions
            bar.update(1)
        row = {name: float(np.mean(np.concatenate(v))) for name, v in per_input.items()}
        # Per-image scores, in image order, for paired comparisons between methods.
        row["per_input"] = {name: np.concatenate(v).tolist() for name, v in per_input.items()}
        row.update(
            time_per_input_s=elapsed / images.shape[0],
            peak_memory_bytes=record.peak_memory_bytes,
            memory_source=record.memory_source,
            forward_passes=record.forward_passes,
            backward_passes=record.backward_passes,
        )
        summary[method] = row
        all_curves[method] = {
            name: {
                "fractions": [float(f) for f in fractions[name]],
                "mean": np.concatenate(curve_rows[name]).mean(axis=0).tolist(),
            }
            for name in CURVES
        }
    bar.close()
    if return_maps:
        maps = {name: np.concatenate(parts) for name, parts in all_maps.items()}
        return summary, all_curves, maps
    return summary, all_curves
