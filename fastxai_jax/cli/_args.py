"""Argument groups that several ``fastxai`` verbs share.

* :func:`add_target_seed_argument`: ``--target-seed`` of the small-CNN target in a workdir.
* :func:`add_protocol_arguments` / :func:`protocol_from_args`: the flags of an
  evaluation :class:`~fastxai_jax.evaluation.Protocol` (``--step-size`` is the
  field ``step_size``).
* :func:`add_recipe_arguments` / :func:`recipe_from_args`: the flags of a
  :class:`~fastxai_jax.configs.learned.LearnedRecipe` (``--num-masks`` is the
  field ``num_masks``; defaults are the recipe's).
"""

from __future__ import annotations

import argparse
import dataclasses

from fastxai_jax.configs.learned import LearnedRecipe

# The benchmark is generated on demand, so its held-out split has no natural end:
# this is the split's size, beyond which ``--num`` is refused (issue 20: 10**8 hung).
MAX_DATASET_IMAGES = 10_000
_DEFAULTS = LearnedRecipe()


def add_target_seed_argument(parser: argparse.ArgumentParser, workdir_flag: str) -> None:
    """``--target-seed``: the training seed of the small-CNN target in ``workdir_flag``."""
    parser.add_argument(
        "--target-seed",
        type=int,
        default=None,
        help=f"small_cnn target's training seed (default: the one saved in {workdir_flag}, else 0)",
    )


# Protocol fields whose flags pass through as they are parsed.
_PROTOCOL_FLAGS = ("granularity", "patch_size", "num_steps", "step_size",
                   "insertion_substrate", "deletion_substrate", "score")  # fmt: skip


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of an evaluation ``Protocol`` (defaults: RISE's pixel protocol)."""
    group = parser.add_argument_group("protocol (fastxai_jax.evaluation.Protocol)")
    group.add_argument("--granularity", default="pixel", choices=["pixel", "patch", "grid"])
    group.add_argument("--patch-size", type=int, default=None)
    group.add_argument("--step-size", type=int, default=None, help="features per step")
    group.add_argument("--num-steps", type=int, default=None, help="curve steps")
    group.add_argument("--insertion-substrate", default="blur")
    group.add_argument("--deletion-substrate", default="zeros")
    group.add_argument("--score", default="prob", choices=["prob", "top1"])
    group.add_argument("--iou-threshold", default="mean", help='"mean" or a float in [0, 1]')


def protocol_from_args(args: argparse.Namespace, **fields):
    """The ``Protocol`` of the parsed flags (validated), with ``fields`` added."""
    from fastxai_jax.evaluation import Protocol

    try:
        threshold = "mean" if args.iou_threshold == "mean" else float(args.iou_threshold)
    except ValueError:
        raise ValueError(
            f"--iou-threshold must be 'mean' or a number; got {args.iou_threshold!r}"
        ) from None
    flags = {name: getattr(args, name) for name in _PROTOCOL_FLAGS}
    return Protocol(**flags, iou_threshold=threshold, **fields)


def _dax_fill(text: str) -> str | float:
    from fastxai_jax.explainers.dax import parse_fill

    try:
        return parse_fill(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _fex_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fex (default: fex_benchmark.BENCHMARK_DEFAULTS)")
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


def _peer_arguments(parser: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    group = parser.add_argument_group("dax / ltx / tve / fastshap")
    group.add_argument("--dax-samples", type=int, default=d.dax_samples, help="DAX perturbations N")
    group.add_argument("--dax-epochs", type=int, default=d.dax_epochs)
    group.add_argument("--dax-net-size", type=int, default=None, help="DAX network input side")
    group.add_argument(
        "--dax-complement",
        choices=["train", "frozen"],
        default=d.dax_complement,
        help="whether DAX's complement term trains the student (authors) or only the generator",
    )
    group.add_argument(
        "--dax-border", type=float, default=d.dax_border, help="DAX border fraction zeroed"
    )
    group.add_argument(
        "--dax-fill", default=d.dax_fill, type=_dax_fill,
        help="DAX off-segment fill: 'grey' (the mean of the segment's channel means, the "
        "authors' code and the default), 'mean' (its own mean colour, LIME's original) or a "
        "number in [0, 1]",
    )  # fmt: skip
    group.add_argument("--ltx-lam", type=float, default=None, help="LTX penalty λ (30)")
    group.add_argument("--ltx-penalty", choices=["softplus", "mean"], default=d.ltx_penalty)
    group.add_argument("--tve-grid", type=int, default=None, help="TVE cells per side")
    group.add_argument("--tve-radius", type=int, default=d.tve_radius)
    group.add_argument(
        "--fastshap-samples", type=int, default=d.fastshap_samples, help="coalitions per image"
    )
    group.add_argument(
        "--fastshap-fill", type=float, default=d.fastshap_fill,
        help="FastSHAP masked value in the target's normalised space (0: the mean pixel; "
        "-1 is black for 'half'-normalised targets such as small_cnn)",
    )  # fmt: skip
    group.add_argument(
        "--explainer-backbone", choices=["vit", "target"], default=d.explainer_backbone,
        help="TVE/FastSHAP backbone: a fresh ViT, or a copy of the target's conv trunk",
    )  # fmt: skip
    group.add_argument(
        "--tve-cells", type=int, default=d.tve_cells, help="TVE cells supervised per image"
    )
    group.add_argument("--tve-head-init", choices=["random", "local"], default=d.tve_head_init)


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of every :class:`LearnedRecipe` field (the run's, FEX's, the others')."""
    d = _DEFAULTS
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument(
        "--num-train", type=int, default=d.num_train, help="benchmark training images"
    )
    parser.add_argument("--image-size", type=int, default=d.image_size)
    parser.add_argument("--seed", type=int, default=d.seed, help="explainer training seed")
    _fex_arguments(parser)
    _peer_arguments(parser)


def recipe_from_args(args: argparse.Namespace) -> LearnedRecipe:
    """The :class:`LearnedRecipe` of the parsed flags."""
    return LearnedRecipe(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(LearnedRecipe)}
    )
