"""``fastxai train-explainer``: train an amortised explainer against a target model.

``--method`` is any learned method of the one table
(:data:`fastxai_jax.explainers.registry.LEARNED_METHODS`: FEX, LTX, TVE,
FastSHAP) or ``dax`` (per-input fits run in batch). Training runs through
:func:`fastxai_jax.explainers.learned.runs.fit`: checkpoints in
``WORKDIR/checkpoints`` (an interrupted run resumes when the same command is run
again), metrics in ``WORKDIR/train_log.jsonl``, the final explainer in
``WORKDIR/explainer``, which ``fastxai explain --method NAME --explainer-ckpt
WORKDIR`` reads. The optimizer is built here from ``--lr`` and ``--steps``.

Example::

  fastxai train-explainer --method fex --target small_cnn --target-weights auto \\
      --workdir runs/fex --steps 700
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp

from fastxai_jax.cli import _peer_methods


def trainable_methods() -> list[str]:
    """``--method`` choices: every learned method of the table, plus ``dax``."""
    from fastxai_jax.explainers.registry import LEARNED_METHODS

    return sorted([*LEARNED_METHODS, "dax"])


# ------------------------------------------------------------------------ FEX


def _fex_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fex")
    group.add_argument("--num-masks", type=int, default=None, help="K masks per image (5)")
    group.add_argument("--loss", choices=["ppo", "reinforce"], default=None)
    group.add_argument("--backbone-mode", choices=["full", "frozen", "lora"], default=None)
    group.add_argument("--lora-rank", type=int, default=None)
    group.add_argument("--patch-size", type=int, default=None, help="explainer patch (4 on 64²)")
    group.add_argument("--hidden-size", type=int, default=None, help="explainer ViT width")
    group.add_argument("--depth", type=int, default=None, help="explainer ViT depth")
    group.add_argument(
        "--policy",
        choices=["sigmoid", "softmax"],
        default=None,
        help="keep probability σ(actor[ŷ]) (paper and authors' code, default) or "
        "softmax_c(actor)[ŷ] (in neither; an experiment of this library)",
    )
    group.add_argument(
        "--epsilon", type=float, default=None, help="ε-greedy exploration share in [0, 1] (0)"
    )
    group.add_argument(
        "--epsilon-scope", choices=["image", "patch"], default=None,
        help="ε-greedy randomises an image's whole mask (authors) or each patch",
    )  # fmt: skip
    group.add_argument(
        "--entropy-reduction", choices=["mean", "sum"], default=None,
        help="entropy bonus: mean over patches (authors) or their sum (the demo's recipe)",
    )  # fmt: skip
    group.add_argument(
        "--ppo-minibatch-size", type=int, default=None,
        help="PPO: rows per optimiser step; each rollout of B·K rows takes B·K // this steps",
    )  # fmt: skip
    group.add_argument("--ppo-epochs", type=int, default=None, help="PPO passes per rollout (1)")
    group.add_argument(
        "--initial-keep",
        type=float,
        default=None,
        help="keep probability of the untrained policy, in (0, 1) (default: the plain init)",
    )


def _train_fex(args: argparse.Namespace, target: tuple) -> dict[str, Any]:
    from fastxai_jax.data.groundtruth import EXPLAINER_SEED, make_benchmark
    from fastxai_jax.explainers.learned import fex_benchmark

    _, variables, family, apply_fn = target
    data = make_benchmark(
        args.num_train, seed=EXPLAINER_SEED + args.seed, image_size=args.image_size
    )
    num_classes = int(jax.eval_shape(apply_fn, variables, data["images"][:1]).shape[-1])
    overrides = {
        name: getattr(args, name)
        for name in (
            "num_masks",
            "loss",
            "backbone_mode",
            "lora_rank",
            "patch_size",
            "policy",
            "epsilon",
            "initial_keep",
            "epsilon_scope",
            "entropy_reduction",
            "ppo_minibatch_size",
            "ppo_epochs",
        )
        if getattr(args, name) is not None
    }
    for name in ("hidden_size", "depth"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    config = fex_benchmark.benchmark_config(
        num_classes, image_size=args.image_size, target_family=family, **overrides
    )
    lr = {} if args.lr is None else {"lr": args.lr}
    settings = fex_benchmark.benchmark_optimizer_settings(args.steps, **lr)
    fex_benchmark.train_fex_on_benchmark(
        apply_fn,
        variables,
        data["images"],
        steps=args.steps,
        batch_size=args.batch_size,
        key=jax.random.key(args.seed),
        workdir=args.workdir,
        config=config,
        optimizer=settings,
        checkpoint_every=args.checkpoint_every,
        mesh=_peer_methods._mesh(args),
        progress=not args.no_progress,
        data_seed=args.seed,
    )
    return {"method": "fex", "config": config.__dict__, "optimizer": settings}


def train(name: str, args: argparse.Namespace, target: tuple) -> dict[str, Any]:
    """Trains ``--method name`` against ``target = (module, variables, family,
    apply_fn)`` and returns a summary dict."""
    if name == "fex":
        return _train_fex(args, target)
    if name == "dax":
        return _peer_methods.train_dax(args, target)
    return _peer_methods.train_peer(args, name, target)


# ------------------------------------------------------------------- the verb


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
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--num-train", type=int, default=4000, help="benchmark training images")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--devices", type=int, default=None, help="data-parallel devices")
    parser.add_argument("--seed", type=int, default=0, help="explainer training seed")
    parser.add_argument(
        "--target-seed",
        type=int,
        default=None,
        help="auto target's training seed (default: the one saved in --target-workdir, else 0)",
    )
    parser.add_argument("--no-progress", action="store_true")
    _fex_arguments(parser)
    _peer_methods.add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def load_target(args: argparse.Namespace) -> tuple:
    """``(module, variables, family, apply_fn)`` for ``--target``/``--target-weights``."""
    from fastxai_jax.models import build, make_apply_fn

    if args.target_weights == "auto":
        if args.target != "small_cnn":
            raise ValueError(
                f"--target-weights auto trains only the benchmark small_cnn; "
                f"pass a params directory for --target {args.target!r}"
            )
        from fastxai_jax.train.target import load_or_train_target

        seed, options = _peer_methods.saved_target_options(
            args.target_workdir, target_seed=args.target_seed, flag="--target-workdir"
        )
        module, variables, family = load_or_train_target(
            args.target_workdir, seed=seed, progress=not args.no_progress, **options
        )
    else:
        from fastxai_jax.train.checkpoint import load_params

        path = pathlib.Path(args.target_weights)
        if not path.exists():
            raise FileNotFoundError(f"--target-weights {path} does not exist")
        _, saved = load_params(path)
        num_classes = None
        if isinstance(saved, dict):
            num_classes = saved.get("num_classes") or (saved.get("config") or {}).get("num_classes")
        if num_classes is None:
            from fastxai_jax.data.groundtruth import NUM_CLASSES

            num_classes = NUM_CLASSES
        module, family = build(args.target, num_classes=int(num_classes))
        sample = jnp.zeros((1, args.image_size, args.image_size, 3), jnp.float32)
        template = jax.eval_shape(lambda: module.init(jax.random.key(0), sample, train=False))
        variables, _ = load_params(path, template)
    return module, variables, family, make_apply_fn(module, family)


def run(args: argparse.Namespace) -> int:
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
    from fastxai_jax.train.target import check_workdir

    check_workdir(args.workdir, "--workdir")
    start = time.perf_counter()
    summary = train(name, args, load_target(args))
    summary["train_seconds"] = time.perf_counter() - start
    workdir = pathlib.Path(args.workdir)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"trained {name} in {summary['train_seconds']:.1f}s; explainer saved in {workdir}")
    return 0
