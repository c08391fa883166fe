"""``fastxai evaluate``: score attribution methods on a dataset split (SPEC §7).

For every method: insertion/deletion AUC (RISE protocol), POS/NEG AUC (LTX),
ADP/PIC, pointing game, IoU, relevance mass, segmentation AP, sparseness,
entropy, and cost (time per input, peak memory, model queries). Writes
``results.json`` (summary + mean curves), ``results.csv`` (one row per method)
and PNG plots of the mean curves into ``--out``. Argument parsing only: the
harness is :mod:`fastxai_jax.evaluation`.

Example::

  fastxai evaluate --model small_cnn --dataset groundtruth --num 64 \\
      --methods saliency,ig,mfaba,random --out runs/eval
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

import jax

from fastxai_jax.cli import _args


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
    parser.add_argument("--seed", type=int, default=0, help="data/key seed (data seed 5000+seed)")
    _args.add_target_seed_argument(parser, "--workdir")
    parser.add_argument("--image-size", type=int, default=None, help="image side (64)")
    parser.add_argument("--batch-size", type=int, default=16)
    _args.add_protocol_arguments(parser)
    parser.add_argument(
        "--options",
        default="{}",
        help='per-method options as JSON, e.g. \'{"ig": {"num_steps": 20}}\'',
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
    return parser


def check_method_options(methods: list[str], method_options: dict[str, Any]) -> None:
    """Refuses ``--options`` for a method not in ``--methods`` and unknown option names."""
    from fastxai_jax.explainers import registry

    for method in methods:
        registry.get_method(method)  # unknown names first
    for method, options in method_options.items():
        if method not in methods:
            raise ValueError(
                f"--options names {method!r}, which is not in --methods {','.join(methods)}"
            )
        registry.check_option_names(method, options)


def _load_target(args: argparse.Namespace):
    from fastxai_jax.data.groundtruth import NUM_CLASSES
    from fastxai_jax.models import make_apply_fn
    from fastxai_jax.train.target_source import init_target

    if args.model == "small_cnn" and not args.untrained:
        from fastxai_jax.train.target import load_or_train_target

        module, variables, family = load_or_train_target(
            args.workdir, seed=args.target_seed_, progress=not args.no_progress, **args.target_
        )
        return make_apply_fn(module, family), variables, family
    if not args.untrained:
        raise ValueError(
            f"--model {args.model!r} has no trained groundtruth target; pass --untrained "
            "for a randomly initialised one (smoke runs) or use --model small_cnn"
        )
    # the compiled init of `fastxai explain --untrained`: the same params, bit for bit
    # (tests/test_explain_cli_library.py)
    module, variables, family = init_target(args.model, NUM_CLASSES, args.image_size, args.seed)
    return make_apply_fn(module, family), variables, family


def run(args: argparse.Namespace) -> int:
    from fastxai_jax.data.groundtruth import EVAL_SEED, make_benchmark
    from fastxai_jax.evaluation import evaluate_methods, write_results
    from fastxai_jax.train.target import DEFAULTS, check_workdir
    from fastxai_jax.train.target_source import saved_target_options

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ValueError(f"--methods must name at least one method; got {args.methods!r}")
    check_method_options(methods, {})  # an unknown method is reported first
    if not 1 <= args.num <= _args.MAX_DATASET_IMAGES:
        raise ValueError(f"--num must lie in [1, {_args.MAX_DATASET_IMAGES}]; got {args.num}")
    for flag in ("batch_size", "image_size", "target_steps"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be positive; got {value}")
    try:
        method_options = json.loads(args.options)
    except json.JSONDecodeError as err:
        raise ValueError(f"--options must be JSON {{method: {{option: value}}}}: {err}") from None
    if not isinstance(method_options, dict) or not all(
        isinstance(v, dict) for v in method_options.values()
    ):
        raise ValueError(f"--options must map method names to option dicts; got {args.options!r}")
    check_method_options(methods, method_options)
    if (args.untrained or args.model != "small_cnn") and (
        args.target_seed is not None or args.target_steps is not None
    ):
        raise ValueError("--target-seed / --target-steps train the small_cnn target: drop them")
    if args.model == "small_cnn" and not args.untrained:
        args.target_seed_, args.target_ = saved_target_options(
            args.workdir, target_seed=args.target_seed, steps=args.target_steps
        )
        trained_size = args.target_.get("image_size", DEFAULTS["image_size"])
        if args.image_size not in (None, trained_size):
            raise ValueError(
                f"--image-size {args.image_size}: the trained small_cnn target sees "
                f"{trained_size}x{trained_size} images"
            )
        args.image_size = trained_size
    args.image_size = args.image_size or DEFAULTS["image_size"]
    protocol = _args.protocol_from_args(args)  # validated before any work
    check_workdir(args.out, "--out")
    apply_fn, params, family = _load_target(args)
    protocol = protocol.replace(normalisation=family)
    data = make_benchmark(args.num, seed=EVAL_SEED + args.seed, image_size=args.image_size)
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
        "target_seed": getattr(args, "target_seed_", None),
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
