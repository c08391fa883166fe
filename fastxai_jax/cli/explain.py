"""``fastxai explain``: attribution maps for images, written as ``.npy`` and PNG overlays.

Argument parsing only. Every method comes from the one table,
:mod:`fastxai_jax.explainers.registry`, and is built by
:func:`fastxai_jax.explainers.explain_fn.make_explain_fn` (a learned explainer is
loaded from ``--explainer-ckpt``, refused for a target whose class count differs
from the one it was trained for); the target comes from
:func:`fastxai_jax.train.target_source.load_zoo_target`, images from
:func:`fastxai_jax.data.images.load_images`, and the loops and outputs from
:mod:`fastxai_jax.evaluation.explain` (images) and
:mod:`fastxai_jax.evaluation.explain_text` (``--text``). ``--target C`` explains
class ``C`` (a learned explainer that cannot condition on a class, LTX, refuses
it); without it, the target's predicted class.

Examples::

  fastxai explain --method mfaba --model small_cnn --dataset groundtruth --num 8 --out runs/mfaba
  fastxai explain --method ig --model resnet18 --weights resnet18.safetensors \\
      --images cat.png dog.jpg --option num_steps=64 --out runs/ig
"""

from __future__ import annotations

import argparse
import ast
from typing import Any

import jax
import numpy as np

from fastxai_jax.cli._args import MAX_DATASET_IMAGES, add_target_seed_argument


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "explain", help="explain a model's predictions on images (.npy maps + PNG overlays)"
    )
    parser.add_argument(
        "--method", default=None, help="a method of the table (see --list); required"
    )
    parser.add_argument(
        "--list", action="store_true", help="print every method with its kind and cost, and exit"
    )
    parser.add_argument("--model", default="small_cnn", help="target model name")
    parser.add_argument("--weights", default=None, help="torch/safetensors or fastxai params file")
    parser.add_argument("--workdir", default="runs/target", help="small_cnn target directory")
    parser.add_argument("--untrained", action="store_true", help="random-init target (smoke)")
    parser.add_argument("--num-classes", type=int, default=None, help="classes (untrained)")
    parser.add_argument("--images", nargs="+", default=None, help="image files")
    parser.add_argument(
        "--text",
        nargs="+",
        default=None,
        help="sentences to explain (text models: minilm_classifier)",
    )
    parser.add_argument("--dataset", default=None, choices=["groundtruth"])
    parser.add_argument(
        "--num", type=int, default=None, help=f"dataset images (8; at most {MAX_DATASET_IMAGES})"
    )
    parser.add_argument("--image-size", type=int, default=None, help="resize side (default: model)")
    parser.add_argument("--target", type=int, default=None, help="class (default: predicted)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--explainer-ckpt", default=None, help="learned explainer checkpoint")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="data and explanation key seed")
    add_target_seed_argument(parser, "--workdir")
    parser.add_argument("--no-png", action="store_true", help="skip the PNG overlays")
    parser.add_argument("--out", default=None, help="output directory (required)")
    parser.set_defaults(func=run)
    return parser


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["num_steps=64", "method='riemann_left'"]`` → ``{"num_steps": 64, ...}``."""
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--option must look like KEY=VALUE; got {pair!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare string
        options[name.strip()] = tuple(value) if isinstance(value, list) else value
    return options


def check_args(args: argparse.Namespace) -> dict[str, Any]:
    """Checks every ``explain`` argument before any compute; returns the ``--option``s.

    The method comes first: an unknown ``--method`` is reported before anything else.
    """
    from fastxai_jax.explainers import registry

    if args.method is None:
        raise ValueError("--method is required (fastxai explain --list shows the methods)")
    if args.out is None:
        raise ValueError("--out is required")
    name = args.method.lower()
    if name not in registry.available_methods():
        known = ", ".join(registry.available_methods())
        raise ValueError(f"unknown --method {args.method!r}; available: {known} (see --list)")
    if registry.is_learned(name) and not args.explainer_ckpt:
        raise ValueError(f"--method {args.method!r} is a learned explainer: pass --explainer-ckpt")
    if (args.images is None) == (args.dataset is None):
        raise ValueError("pass exactly one of --images FILES or --dataset groundtruth")
    if args.images is not None and args.num is not None:
        raise ValueError("--num counts --dataset images; drop it with --images")
    if args.num is not None and not 1 <= args.num <= MAX_DATASET_IMAGES:
        raise ValueError(
            f"--num must lie in [1, {MAX_DATASET_IMAGES}] (the held-out split's size); "
            f"got {args.num}"
        )
    for flag in ("batch_size", "image_size", "num_classes"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be positive; got {value}")
    options = parse_options(args.option)
    if options and not registry.is_learned(name):
        registry.check_option_names(name, options)
    from fastxai_jax.train.target import check_workdir

    check_workdir(args.out, "--out")
    if args.model == "small_cnn" and not (args.untrained or args.weights):
        from fastxai_jax.train.target_source import saved_target_options

        saved_target_options(args.workdir, target_seed=args.target_seed)  # checked early
    elif args.target_seed is not None:
        raise ValueError("--target-seed trains the small_cnn target of --workdir: drop it")
    return options


def run(args: argparse.Namespace) -> int:
    from fastxai_jax.data.images import load_images
    from fastxai_jax.evaluation.explain import explain_images, save_maps
    from fastxai_jax.evaluation.run import takes_image_keys
    from fastxai_jax.explainers.explain_fn import describe_methods, make_explain_fn
    from fastxai_jax.explainers.registry import is_learned
    from fastxai_jax.models import make_apply_fn
    from fastxai_jax.train.target_source import default_image_size, load_zoo_target

    if args.list:
        print("\n".join(describe_methods()))
        return 0
    if getattr(args, "text", None) is not None:
        return run_text(args)
    options = check_args(args)
    size = args.image_size or default_image_size(args.model)
    if args.images:
        images, names = load_images(args.images, size, flag="--images")
    else:
        from fastxai_jax.data.groundtruth import EVAL_SEED, make_benchmark

        num = 8 if args.num is None else args.num
        data = make_benchmark(num, seed=EVAL_SEED + args.seed, image_size=size)
        images = np.asarray(data["images"], np.float32)
        names = [f"groundtruth_{i:04d}" for i in range(len(images))]
    module, variables, family = load_zoo_target(
        args.model,
        image_size=size,
        weights=args.weights,
        workdir=args.workdir,
        untrained=args.untrained,
        num_classes=args.num_classes,
        seed=args.seed,
        target_seed=args.target_seed,
    )
    explain, cost = make_explain_fn(
        args.method,
        module,
        variables,
        family,
        model=args.model,
        options=options,
        explainer_ckpt=args.explainer_ckpt,
        target_given=args.target is not None,
    )
    maps, targets, seconds = explain_images(
        explain,
        make_apply_fn(module, family),
        variables,
        images,
        key=jax.random.key(args.seed),
        batch_size=args.batch_size,
        target=args.target,
        # RISE draws masks per image index, so maps do not depend on --batch-size.
        per_image_keys=not is_learned(args.method) and takes_image_keys(args.method),
    )
    summary = {
        "method": args.method,
        "model": args.model,
        "num_images": len(images),
        "image_size": size,
        "targets": targets.tolist(),
        "seconds_per_image_incl_compile": seconds / len(images),
        "cost_per_input": cost,
        "options": {k: repr(v) for k, v in options.items()},
    }
    out = save_maps(
        args.out,
        names,
        images,
        maps,
        targets,
        summary,
        title=f"{args.method} · {args.model}",
        png=not args.no_png,
    )
    print(f"wrote {len(images)} attributions to {out}")
    return 0


def run_text(args: argparse.Namespace) -> int:
    """``--text``: token relevance of ``--model minilm_classifier`` on each sentence,
    printed as an ANSI highlight and written to ``OUT/text.html`` and ``OUT/text.json``."""
    from fastxai_jax.evaluation.explain_text import explain_text, save_text
    from fastxai_jax.evaluation.text_render import ansi_highlight

    if args.images is not None or args.dataset is not None:
        raise ValueError("--text cannot be combined with --images or --dataset")
    workdir = "runs/minilm_classifier" if args.workdir == "runs/target" else args.workdir
    records = explain_text(
        args.method,
        args.text,
        args.weights or workdir,
        model=args.model,
        options=parse_options(args.option),
        explainer_ckpt=args.explainer_ckpt,
        target=args.target,
        seed=args.seed,
    )
    for record in records:
        values = np.asarray(record["relevance"], np.float32)
        print(f"[class {record['target']}] {ansi_highlight(record['tokens'], values)}")
    html = save_text(args.out, records, f"{args.method.lower()} on {args.model}")
    print(f"wrote {html}")
    return 0
