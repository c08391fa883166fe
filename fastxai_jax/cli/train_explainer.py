"""``fastxai train-explainer``: train an amortised explainer against a target model.

``--method`` is any learned method of the one table
(:data:`fastxai_jax.explainers.registry.LEARNED_METHODS`: FEX, LTX, TVE,
FastSHAP) or ``dax`` (per-input fits run in batch). Argument parsing only: the
flags make a :class:`fastxai_jax.configs.learned.LearnedRecipe` and
:func:`fastxai_jax.evaluation.train_explainer` trains it: checkpoints in
``WORKDIR/checkpoints`` (an interrupted run resumes when the same command is run
again), metrics in ``WORKDIR/train_log.jsonl``, the final explainer in
``WORKDIR/explainer``, which ``fastxai explain --method NAME --explainer-ckpt
WORKDIR`` reads.

Example::

  fastxai train-explainer --method fex --target small_cnn --target-weights auto \\
      --workdir runs/fex --steps 700
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from fastxai_jax.cli import _args
from fastxai_jax.evaluation._learned import trainable_methods


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train-explainer",
        help="train an amortised explainer (FEX, ...) against a target model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--method", required=True, help=f"one of {trainable_methods()}")
    parser.add_argument("--target", default="small_cnn", help="target model name")
    parser.add_argument(
        "--target-weights",
        default="auto",
        help="fastxai params directory of the target, or 'auto' (load or train the benchmark "
        "small_cnn in --target-workdir)",
    )
    parser.add_argument("--target-workdir", default="runs/target")
    parser.add_argument("--workdir", required=True, help="run directory (resumed if it exists)")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--devices", type=int, default=None, help="data-parallel devices")
    _args.add_target_seed_argument(parser, "--target-workdir")
    parser.add_argument("--no-progress", action="store_true")
    _args.add_recipe_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def load_target(args: argparse.Namespace) -> tuple:
    """``(module, variables, family, apply_fn)`` for ``--target``/``--target-weights``."""
    from fastxai_jax.data.groundtruth import NUM_CLASSES
    from fastxai_jax.models import make_apply_fn
    from fastxai_jax.train import target_source

    if args.target_weights == "auto":
        if args.target != "small_cnn":
            raise ValueError(
                f"--target-weights auto trains only the benchmark small_cnn; "
                f"pass a params directory for --target {args.target!r}"
            )
        module, variables, family = target_source.load_workdir_target(
            args.target_workdir,
            target_seed=args.target_seed,
            progress=not args.no_progress,
            flag="--target-workdir",
        )
    else:
        module, variables, family = target_source.load_params_target(
            args.target,
            args.target_weights,
            image_size=args.image_size,
            default_num_classes=NUM_CLASSES,
            flag="--target-weights",
        )
    return module, variables, family, make_apply_fn(module, family)


def run(args: argparse.Namespace) -> int:
    from fastxai_jax.evaluation import train_explainer
    from fastxai_jax.train.target import check_workdir

    name = args.method.lower()
    if name not in trainable_methods():
        raise ValueError(f"unknown --method {args.method!r}; trainable: {trainable_methods()}")
    for option in ("steps", "batch_size", "num_train", "checkpoint_every", "image_size"):
        if getattr(args, option) < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be >= 1")
    if args.devices is not None and args.devices < 1:
        raise ValueError(f"--devices must be >= 1 (omit it for one device); got {args.devices}")
    if args.lr is not None and not 0 < args.lr < float("inf"):
        raise ValueError(f"--lr must be a positive finite number; got {args.lr}")
    if args.target_weights != "auto" and args.target_seed is not None:
        raise ValueError("--target-seed trains the auto target: drop it with --target-weights")
    recipe = _args.recipe_from_args(args)
    check_workdir(args.workdir, "--workdir")
    start = time.perf_counter()
    summary = train_explainer(
        name,
        load_target(args),
        args.workdir,
        recipe,
        target_name=args.target,
        checkpoint_every=args.checkpoint_every,
        devices=args.devices,
        progress=not args.no_progress,
    )
    summary["train_seconds"] = time.perf_counter() - start
    workdir = pathlib.Path(args.workdir)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"trained {name} in {summary['train_seconds']:.1f}s; explainer saved in {workdir}")
    return 0
