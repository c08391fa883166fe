"""``fastxai train-target``: train the small CNN on the embedded ground-truth benchmark.

Example::

  fastxai train-target --workdir runs/target --steps 1500 --seed 0

Re-running the same command resumes an interrupted run from its last
checkpoint (also one killed while writing its final ``params/``), or just
reports the accuracy of a finished one. Every argument is checked before any
compute; a run whose loss turns NaN/Inf stops with "training diverged at step N".
"""

from __future__ import annotations

import argparse
import json

from fastxai_jax.train.target import DEFAULTS


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train-target",
        aliases=["train_target"],
        help="train the small CNN target on the planted-object benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", default="runs/target", help="run directory")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="training steps")
    parser.add_argument("--seed", type=int, default=0, help="data and initialisation seed")
    parser.add_argument("--num-train", type=int, default=DEFAULTS["num_train"])
    parser.add_argument("--num-test", type=int, default=DEFAULTS["num_test"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="peak learning rate")
    parser.add_argument(
        "--null-fraction",
        type=float,
        default=None,
        help="share of each batch with the object blacked out and a uniform label (default 0)",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=250, help="steps between resumable checkpoints"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from fastxai_jax.train.target import load_or_train_target

    if args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be a positive int; got {args.checkpoint_every}")
    *_, metrics = load_or_train_target(
        args.workdir,
        seed=args.seed,
        progress=not args.no_progress,
        return_metrics=True,
        checkpoint_every=args.checkpoint_every,
        steps=args.steps,
        num_train=args.num_train,
        num_test=args.num_test,
        batch_size=args.batch_size,
        lr=args.lr,
        null_fraction=args.null_fraction,
    )
    print(f"test accuracy: {metrics['test_accuracy']:.4f}")
    print(json.dumps({"workdir": str(args.workdir), **metrics}))
    return 0
