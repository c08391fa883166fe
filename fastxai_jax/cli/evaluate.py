"""``fastxai evaluate``: score attribution methods on a dataset split (SPEC §7).

For every method: insertion/deletion AUC (RISE protocol), POS/NEG AUC (LTX),
ADP/PIC, pointing game, IoU, relevance mass, segmentation AP, sparseness,
entropy, and cost (time per input, peak memory, model queries). Writes
``results.json`` (summary + mean curves), ``results.csv`` (one row per method)
and PNG plots of the mean curves into ``--out``.

Example::

  fastxai evaluate --model small_cnn --dataset groundtruth --num 64 \\
      --methods saliency,ig,mfaba,random --out runs/eval
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax import metrics
from fastxai_jax.core import ApplyFn, Params

CURVES = ("insertion", "deletion", "pos", "neg")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate", help="score attribution methods (insertion/deletion, POS/NEG, localisation)"
    )
    parser.add_argument("--model", default="small_cnn", help="target model (default small_cnn)")
    parser.add_argument("--dataset", default="groundtruth", choices=["groundtruth"])
    parser.add_argument("--num", type=int, default=64, help="number of images")
    parser.add_argument("--methods", default="saliency,random", help="comma-separated names")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--workdir", default="runs/target", help="trained target's directory")
    parser.add_argument("--untrained", action="store_true", help="random-init target (smoke)")
    parser.add_argument("--target-steps", type=int, default=None, help="target training steps")
    parser.add_argument("--seed", type=int, default=0, help="data/key seed (data seed 1000+seed)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--granularity", default="pixel", choices=["pixel", "patch", "grid"])
    parser.add_argument("--patch-size", type=int, default=None)
    parser.add_argument("--step-size", type=int, default=None, help="features per step")
    parser.add_argument("--num-steps", type=int, default=None, help="curve steps")
    parser.add_argument("--insertion-substrate", default="blur")
    parser.add_argument("--deletion-substrate", default="zeros")
    parser.add_argument("--score", default="prob", choices=["prob", "top1"])
    parser.add_argument("--iou-threshold", default="mean", help='"mean" or a float in [0, 1]')
    parser.add_argument(
        "--options",
        default="{}",
        help='per-method options as JSON, e.g. \'{"ig": {"num_steps": 20}}\'',
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
    return parser


def _to_pixels(attribution: jax.Array, image_hw: tuple[int, int]) -> jax.Array:
    """``[B, H, W]`` map for localisation: channels summed, a grid upsampled nearest."""
    if attribution.ndim == 4:
        attribution = jnp.sum(attribution, axis=-1)
    if attribution.shape[1:] != tuple(image_hw):
        rows = (np.arange(image_hw[0]) * attribution.shape[1]) // image_hw[0]
        cols = (np.arange(image_hw[1]) * attribution.shape[2]) // image_hw[1]
        attribution = attribution[:, rows][:, :, cols]
    return attribution


def _batch_scores(apply_fn, params, x, attribution, masks, protocol) -> dict[str, Any]:
    """Per-input scores and curves of one batch."""
    image_hw = x.shape[1:3]
    pixel_map = _to_pixels(attribution, image_hw)
    is_grid = attribution.ndim == 3 and attribution.shape[1:] != tuple(image_hw)
    granularity = "grid" if is_grid else protocol["granularity"]
    curve_map = attribution if is_grid else pixel_map
    ins_del = metrics.insertion_deletion(
        apply_fn,
        params,
        x,
        curve_map,
        granularity=granularity,
        patch_size=protocol["patch_size"],
        num_steps=protocol["num_steps"],
        step_size=protocol["step_size"] if granularity == "pixel" else None,
        insertion_substrate=protocol["insertion_substrate"],
        deletion_substrate=protocol["deletion_substrate"],
        normalisation=protocol["normalisation"],
        score=protocol["score"],
    )
    patch = protocol.get("patch_protocol")
    if patch:  # the FEX paper's protocol: patches of the pixel map, few steps, gray fill
        patch_curves = metrics.insertion_deletion(
            apply_fn,
            params,
            x,
            pixel_map,
            granularity="patch",
            patch_size=patch["patch_size"],
            num_steps=patch["num_steps"],
            insertion_substrate=patch["substrate"],
            deletion_substrate=patch["substrate"],
            normalisation=protocol["normalisation"],
            score=protocol["score"],
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
        "iou": metrics.iou(pixel_map, masks, threshold=protocol["iou_threshold"]),
        "relevance_mass": metrics.relevance_mass(pixel_map, masks),
        "segmentation_ap": seg.average_precision,
        "sparseness": metrics.sparseness(pixel_map),
        "entropy": metrics.entropy(pixel_map),
    }
    if patch:
        scores["patch_insertion_auc"] = patch_curves["insertion"].auc
        scores["patch_deletion_auc"] = patch_curves["deletion"].auc
    curves = {name: result for name, result in {**ins_del, **pos_neg}.items()}
    return {"scores": scores, "curves": curves}


def evaluate_methods(
    apply_fn: ApplyFn,
    params: Params,
    images: Any,
    masks: Any,
    methods: list[str],
    *,
    key: jax.Array,
    batch_size: int = 16,
    protocol: dict[str, Any] | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    explainers: dict[str, Callable[..., Any]] | None = None,
    progress: bool = True,
    return_maps: bool = False,
):
    """Scores each registered method on ``images`` against ground-truth ``masks``.

    Args:
      apply_fn: ``apply_fn(params, x01) -> logits``.
      params: target parameters.
      images: ``[N, H, W, C]`` in ``[0, 1]``.
      masks: ``[N, H, W]`` bool ground truth (planted objects).
      methods: registry names (``fastxai_jax.explainers.registry``).
      key: PRNG key (folded per method and batch for stochastic methods).
      batch_size: images per batch.
      protocol: insertion/deletion options (see :func:`default_protocol`).
      method_options: ``{method: options}`` passed to ``registry.attribute``.
      explainers: learned explainers scored after ``methods``, as ``{name:
        explain(x, target) -> map}``; they explain the target's predicted class and
        spend no target query themselves (cost 0 forward / 0 backward).
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

    from fastxai_jax.explainers import registry

    images, masks = np.asarray(images), np.asarray(masks).astype(bool)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty [N, H, W, C] batch; got {images.shape}")
    if masks.shape != images.shape[:3]:
        raise ValueError(f"masks must have shape {images.shape[:3]}; got {masks.shape}")
    explainers = dict(explainers or {})
    if not methods and not explainers:
        raise ValueError("methods must name at least one method")
    for method in methods:
        registry.get_method(method)  # unknown names fail before any work
    protocol = {**default_protocol(), **(protocol or {})}
    method_options = method_options or {}
    starts = list(range(0, images.shape[0], batch_size))
    names = list(methods) + list(explainers)
    bar = tqdm(total=len(names) * len(starts), disable=not progress, desc="evaluate")
    summary, all_curves, all_maps = {}, {}, {}
    predict = jax.jit(lambda x: jnp.argmax(apply_fn(params, x), axis=-1))
    for method_index, method in enumerate(names):
        options = method_options.get(method, {})
        per_input: dict[str, list] = {}
        curve_rows: dict[str, list] = {name: [] for name in CURVES}
        fractions: dict[str, np.ndarray] = {}
        elapsed, record, compiled_shapes = 0.0, None, set()
        for batch_index, start in enumerate(starts):
            x = jnp.asarray(images[start : start + batch_size])
            batch_key = jax.random.fold_in(jax.random.fold_in(key, method_index), batch_index)
            if method in explainers:
                target = predict(x)
                call = lambda x=x, target=target, fn=explainers[method]: fn(x, target)
                cost_options = {}
            else:
                spec = registry.get_method(method)
                call_key = batch_key if spec.needs_key else None
                call = lambda x=x, k=call_key, method=method, options=options: registry.attribute(
                    method, apply_fn, params, x, key=k, **options
                )
                cost_options = {"method": method, "options": options}
            attribution, record = metrics.measure_cost(
                call,
                num_inputs=x.shape[0],
                warmup=x.shape not in compiled_shapes,  # compile (each batch shape) untimed
                **cost_options,
            )
            if method in explainers:  # one explainer forward, no target query
                record = record._replace(method=method, forward_passes=0, backward_passes=0)
            if return_maps:
                all_maps.setdefault(method, []).append(
                    np.asarray(_to_pixels(jnp.asarray(attribution), x.shape[1:3]))
                )
            compiled_shapes.add(x.shape)
            elapsed += record.time_per_input_s * x.shape[0]
            batch = _batch_scores(
                apply_fn,
                params,
                x,
                jnp.asarray(attribution),
                masks[start : start + batch_size],
                protocol,
            )
            for name, values in batch["scores"].items():
                per_input.setdefault(name, []).append(np.asarray(values, np.float64))
            for name in CURVES:
                curve_rows[name].append(np.asarray(batch["curves"][name].curve, np.float64))
                fractions[name] = batch["curves"][name].fractions
            bar.update(1)
        row = {name: float(np.mean(np.concatenate(v))) for name, v in per_input.items()}
        # Per-image scores, in image order, for paired comparisons between methods
        # (fastxai_jax.metrics.paired_difference).
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


def default_protocol() -> dict[str, Any]:
    """RISE pixel protocol (224 pixels a step; insertion on blur, deletion on black)."""
    return {
        "granularity": "pixel",
        "patch_size": None,
        "num_steps": None,
        "step_size": None,
        "insertion_substrate": "blur",
        "deletion_substrate": "zeros",
        "normalisation": None,
        "score": "prob",
        "iou_threshold": "mean",
        # Optional second insertion/deletion protocol (scores patch_*_auc), e.g. the
        # FEX paper's: {"patch_size": 8, "num_steps": 10, "substrate": "zeros_normalised"}.
        "patch_protocol": None,
    }


def write_results(out: str | pathlib.Path, summary, curves, config: dict[str, Any]) -> None:
    """Writes ``results.json``, ``results.csv`` and one PNG per curve kind into ``out``."""
    from fastxai_jax.plots import plot_curves

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"config": config, "methods": summary, "curves": curves}, indent=1)
    )
    scalar = {
        method: {k: v for k, v in row.items() if not isinstance(v, (dict, list))}
        for method, row in summary.items()
    }
    columns = ["method"] + sorted({key for row in scalar.values() for key in row})
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for method, row in scalar.items():
            writer.writerow({"method": method, **row})
    score = config.get("protocol", {}).get("score", "prob")
    curve_score = "probability of ŷ" if score == "prob" else "top-1 agreement with ŷ"
    labels = {
        "insertion": curve_score,
        "deletion": curve_score,
        "pos": "top-1 agreement with ŷ",
        "neg": "top-1 agreement with ŷ",
    }
    for name in CURVES:
        plot_curves(
            out / f"{name}.png",
            {method: np.asarray(c[name]["mean"]) for method, c in curves.items()},
            f"{name} curve ({config.get('model', '')}, N={config.get('num', '')})",
            fractions=next(iter(curves.values()))[name]["fractions"],
            ylabel=labels[name],
        )


def _load_target(args: argparse.Namespace):
    from fastxai_jax.data.groundtruth import NUM_CLASSES
    from fastxai_jax.models import build, make_apply_fn

    if args.model == "small_cnn" and not args.untrained:
        from fastxai_jax.train.target import DEFAULTS, load_or_train_target

        if args.image_size != DEFAULTS["image_size"]:
            raise ValueError(
                f"--image-size {args.image_size}: the trained small_cnn target sees "
                f"{DEFAULTS['image_size']}x{DEFAULTS['image_size']} images"
            )

        options = {} if args.target_steps is None else {"steps": args.target_steps}
        module, variables, family = load_or_train_target(
            args.workdir, seed=args.seed, progress=not args.no_progress, **options
        )
        return make_apply_fn(module, family), variables, family
    if not args.untrained:
        raise ValueError(
            f"--model {args.model!r} has no trained groundtruth target; pass --untrained "
            "for a randomly initialised one (smoke runs) or use --model small_cnn"
        )
    module, family = build(args.model, num_classes=NUM_CLASSES)
    sample = jnp.zeros((1, args.image_size, args.image_size, 3), jnp.float32)
    variables = module.init(jax.random.key(args.seed), sample, train=False)
    return make_apply_fn(module, family), variables, family


def run(args: argparse.Namespace) -> int:
    from fastxai_jax.data.groundtruth import EVAL_SEED, make_benchmark

    if args.num < 1 or args.batch_size < 1:
        raise ValueError(
            f"--num and --batch-size must be positive; got {args.num}, {args.batch_size}"
        )
    threshold = args.iou_threshold if args.iou_threshold == "mean" else float(args.iou_threshold)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        method_options = json.loads(args.options)
    except json.JSONDecodeError as err:
        raise ValueError(f"--options must be JSON {{method: {{option: value}}}}: {err}") from None
    if not isinstance(method_options, dict) or not all(
        isinstance(v, dict) for v in method_options.values()
    ):
        raise ValueError(f"--options must map method names to option dicts; got {args.options!r}")
    apply_fn, params, family = _load_target(args)
    data = make_benchmark(args.num, seed=EVAL_SEED + args.seed, image_size=args.image_size)
    protocol = {
        **default_protocol(),
        "granularity": args.granularity,
        "patch_size": args.patch_size,
        "num_steps": args.num_steps,
        "step_size": args.step_size,
        "insertion_substrate": args.insertion_substrate,
        "deletion_substrate": args.deletion_substrate,
        "normalisation": family,
        "score": args.score,
        "iou_threshold": threshold,
    }
    summary, curves = evaluate_methods(
        apply_fn,
        params,
        data["images"],
        data["masks"],
        methods,
        key=jax.random.key(args.seed),
        batch_size=args.batch_size,
        protocol=protocol,
        method_options=method_options,
        progress=not args.no_progress,
    )
    config = {
        "model": args.model,
        "dataset": args.dataset,
        "num": args.num,
        "seed": args.seed,
        "image_size": args.image_size,
        "untrained": args.untrained,
        "methods": methods,
        "protocol": protocol,
        "options": method_options,
        "device": str(jax.devices()[0]),
    }
    write_results(args.out, summary, curves, config)
    for method, row in summary.items():
        print(
            f"{method:>18}: ins {row['insertion_auc']:.4f}  del {row['deletion_auc']:.4f}  "
            f"POS {row['pos_auc']:.2f}  NEG {row['neg_auc']:.2f}  "
            f"point {row['pointing_game']:.3f}  IoU {row['iou']:.3f}  "
            f"mass {row['relevance_mass']:.3f}  {1e3 * row['time_per_input_s']:.2f} ms/input",
            file=sys.stdout,
        )
    print(f"wrote {pathlib.Path(args.out) / 'results.json'}")
    return 0
