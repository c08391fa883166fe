"""How ``fastxai train-explainer`` turns its flags into a learned method's config
and optimizer (FEX, LTX, TVE, FastSHAP), plus DAX's per-input batch run.

Imported by :mod:`fastxai_jax.cli.train_explainer` (never the other way round).
The amortised methods train through :func:`fastxai_jax.explainers.learned.runs.fit`
(checkpoints in ``WORKDIR/checkpoints``, resumed automatically; ``--devices N``
data parallel) and are saved in ``WORKDIR/explainer`` for ``fastxai explain
--method NAME --explainer-ckpt WORKDIR``. DAX has nothing to amortise:
``train-explainer --method dax`` runs the vmapped per-input fits on
``--num-train`` benchmark images and saves the maps (``WORKDIR/dax_maps.npy``).
Also shared by the verbs: :func:`saved_target_options` (a workdir's target).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# The benchmark is generated on demand, so its held-out split has no natural end:
# this is the split's size, beyond which ``--num`` is refused (issue 20: 10**8 hung).
MAX_DATASET_IMAGES = 10_000


# ------------------------------------------- the target of a workdir (all verbs)


def saved_target_options(
    workdir, *, target_seed: int | None = None, flag: str = "--workdir", **requested: Any
) -> tuple[int, dict[str, Any]]:
    """``(seed, options)`` for ``load_or_train_target(workdir, ...)``, checked before compute.

    A workdir holding a finished target gives the seed and options it was saved
    with (so a target trained with non-default options, e.g. the demo's, loads);
    an explicit ``target_seed`` or ``requested`` option (``None``: not given) that
    contradicts them is refused. An empty workdir gives ``target_seed`` (0 when
    ``None``) and ``requested``; it must be a writable directory.

    Raises:
      ValueError: a requested option differs from the saved target's.
      NotADirectoryError, PermissionError: ``workdir`` is a file or read-only.
    """
    from fastxai_jax.train.checkpoint import Checkpointer
    from fastxai_jax.train.target import DEFAULTS, OPTIONAL, check_workdir

    requested = {name: value for name, value in requested.items() if value is not None}
    path, config = pathlib.Path(workdir), None
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{flag} {path} exists and is not a directory")
    if (path / "params").is_dir():
        with Checkpointer(path / "params", max_to_keep=1) as ckpt:
            if ckpt.latest_step() is not None:
                saved = ckpt.restore_config()
                config = (saved.get("config") if isinstance(saved, dict) else None) or {}
    if config is None:
        check_workdir(path, flag)
        return (0 if target_seed is None else int(target_seed)), requested
    seed = int(config.get("seed", 0))
    options = {name: config[name] for name in (*DEFAULTS, *OPTIONAL) if name in config}
    if target_seed is not None and int(target_seed) != seed:
        raise ValueError(
            f"--target-seed {target_seed}: {flag} {path} holds a target trained with seed "
            f"{seed}; drop --target-seed or pass another {flag}"
        )
    for name, value in requested.items():
        if options.get(name, {**DEFAULTS, **OPTIONAL}.get(name)) != value:
            raise ValueError(
                f"{name}={value!r}: {flag} {path} holds a target trained with "
                f"{name}={options.get(name)!r}; drop it or pass another {flag}"
            )
    return seed, options


def _data(args):
    from fastxai_jax.data.groundtruth import EXPLAINER_SEED, make_benchmark

    return make_benchmark(
        args.num_train, seed=EXPLAINER_SEED + args.seed, image_size=args.image_size
    )


def _batch_fn(images: np.ndarray, batch_size: int, seed: int):
    if batch_size > len(images):
        raise ValueError(f"--batch-size {batch_size} exceeds --num-train {len(images)}")
    order = np.random.default_rng(seed).permutation(len(images))
    per_epoch = len(images) // batch_size

    def batch_fn(step: int):
        start = (step % per_epoch) * batch_size
        return jnp.asarray(images[order[start : start + batch_size]])

    return batch_fn


def _mesh(args):
    if not args.devices:
        return None
    from fastxai_jax.train.sharding import data_mesh

    return data_mesh(args.devices)


def train_peer(args, name: str, target: tuple) -> dict[str, Any]:
    """Trains LTX / TVE / FastSHAP (``name``) with ``runs.fit`` and saves it."""
    from fastxai_jax.explainers import registry
    from fastxai_jax.explainers.learned import runs
    from fastxai_jax.train.loop import make_optimizer

    module, variables, family, apply_fn = target
    images = _data(args)["images"]
    num_classes = int(jax.eval_shape(apply_fn, variables, jnp.asarray(images[:1])).shape[-1])
    config = config_from_args(name, args, target, images)
    settings = optimizer_settings(name, args)
    learned = registry.make_learned(name, config, apply_fn, variables, module=module)
    trained, history = runs.fit(
        name,
        learned,
        make_optimizer(**settings),
        _batch_fn(images, args.batch_size, args.seed),
        sample_batch=jnp.asarray(images[:2]),
        num_steps=args.steps,
        key=jax.random.key(args.seed + 1),
        init_key=jax.random.key(args.seed),
        workdir=pathlib.Path(args.workdir),
        num_classes=num_classes,
        checkpoint_every=args.checkpoint_every,
        mesh=_mesh(args),
        progress=not args.no_progress,
        run_config={"optimizer": settings},
    )
    losses = [h["loss"] for h in history]
    return {
        "method": name,
        "config": dataclasses.asdict(config),
        "optimizer": settings,
        "final_loss": losses[-1] if losses else None,
    }


def config_from_args(name: str, args, target: tuple, images) -> Any:
    """The ``name`` config for the train-explainer flags and the target."""
    module, variables, family, apply_fn = target
    if name == "ltx":
        return _ltx_config(args, family, args.target)
    if name == "tve":
        from fastxai_jax.explainers.learned import tve

        encoder_fn = tve.encoder_from_module(module, family)
        embed_dim = int(jax.eval_shape(encoder_fn, variables, jnp.asarray(images[:1])).shape[-1])
        return _tve_config(args, family, embed_dim)
    if name == "fastshap":
        shape = jax.eval_shape(apply_fn, variables, jnp.asarray(images[:1])).shape
        return _fastshap_config(args, family, int(shape[-1]))
    raise ValueError(f"--method {name!r} has no train-explainer recipe")


_DEFAULT_LR = {"ltx": 2e-3, "tve": 1e-3, "fastshap": 1e-3}


def optimizer_settings(name: str, args) -> dict[str, Any]:
    """``train.loop.make_optimizer`` settings for ``name`` from ``--lr``/``--steps``
    (the authors' AdamW recipes: LTX warm-up 20 % then constant, TVE/FastSHAP
    warm-up 5 % then cosine)."""
    settings = {"name": "adamw", "lr": args.lr or _DEFAULT_LR[name], "total_steps": args.steps}
    if name == "ltx":
        return {**settings, "warmup_frac": 0.2, "schedule": "constant", "weight_decay": 1e-2}
    return {**settings, "warmup_frac": 0.05, "weight_decay": 1e-4}


def _dax_fill(text: str) -> str | float:
    from fastxai_jax.explainers.dax import parse_fill

    try:
        return parse_fill(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dax / ltx / tve / fastshap")
    group.add_argument("--dax-samples", type=int, default=3000, help="DAX perturbations N")
    group.add_argument("--dax-epochs", type=int, default=9)
    group.add_argument("--dax-net-size", type=int, default=None, help="DAX network input side")
    group.add_argument(
        "--dax-complement",
        choices=["train", "frozen"],
        default="train",
        help="whether DAX's complement term trains the student (authors) or only the generator",
    )
    group.add_argument("--dax-border", type=float, default=0.0, help="DAX border fraction zeroed")
    group.add_argument(
        "--dax-fill", default="grey", type=_dax_fill,
        help="DAX off-segment fill: 'grey' (the mean of the segment's channel means, the "
        "authors' code and the default), 'mean' (its own mean colour, LIME's original) or a "
        "number in [0, 1]",
    )  # fmt: skip
    group.add_argument("--ltx-lam", type=float, default=None, help="LTX penalty λ (30)")
    group.add_argument("--ltx-penalty", choices=["softplus", "mean"], default="softplus")
    group.add_argument("--tve-grid", type=int, default=None, help="TVE cells per side")
    group.add_argument("--tve-radius", type=int, default=1)
    group.add_argument("--fastshap-samples", type=int, default=32, help="coalitions per image")
    group.add_argument(
        "--fastshap-fill", type=float, default=0.0,
        help="FastSHAP masked value in the target's normalised space (0: the mean pixel; "
        "-1 is black for 'half'-normalised targets such as small_cnn)",
    )  # fmt: skip
    group.add_argument(
        "--explainer-backbone", choices=["vit", "target"], default="vit",
        help="TVE/FastSHAP backbone: a fresh ViT, or a copy of the target's conv trunk",
    )  # fmt: skip
    group.add_argument("--tve-cells", type=int, default=1, help="TVE cells supervised per image")
    group.add_argument("--tve-head-init", choices=["random", "local"], default="random")


# ------------------------------------------------------------------------ DAX


def train_dax(args, target) -> dict[str, Any]:
    from fastxai_jax.explainers import dax

    _, variables, _, apply_fn = target
    x = jnp.asarray(_data(args)["images"])
    classes = jnp.argmax(apply_fn(variables, x), axis=-1).astype(jnp.int32)
    options = {
        "num_samples": args.dax_samples,
        "epochs": args.dax_epochs,
        "complement_trains_student": args.dax_complement == "train",
        "border": args.dax_border,
        "fill": args.dax_fill,
    }
    if args.dax_net_size:
        options["net_size"] = args.dax_net_size
    maps = [
        dax.dax(apply_fn, variables, x[i : i + args.batch_size], classes[i : i + args.batch_size],
                key=jax.random.fold_in(jax.random.key(args.seed), i), **options)
        for i in range(0, x.shape[0], args.batch_size)
    ]  # fmt: skip
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    np.save(workdir / "dax_maps.npy", np.concatenate([np.asarray(m) for m in maps]))
    return {"method": "dax", "options": options, "num_images": int(x.shape[0])}


def _ltx_config(args, family, target_name):
    from fastxai_jax.explainers.learned import ltx

    kind = "vit" if target_name.startswith("vit") else "cnn"
    feature = {"small_cnn": "conv_last", "vgg16": "features"}.get(target_name, "layer4")
    return ltx.LtxConfig(
        kind=kind, family=family, feature=feature, lam=args.ltx_lam or 30.0,
        penalty=args.ltx_penalty,
    )  # fmt: skip


def _tve_config(args, family, embed_dim):
    from fastxai_jax.explainers.learned import tve

    grid = args.tve_grid or args.image_size // 8
    return tve.TveConfig(
        embed_dim=embed_dim, image_size=args.image_size, grid=grid, radius=args.tve_radius,
        patch_size=args.patch_size or 8, hidden_size=args.hidden_size or 64,
        depth=args.depth or 2, num_heads=4, mlp_dim=4 * (args.hidden_size or 64),
        explainer_family="half", encoder_family=family, backbone=args.explainer_backbone,
        cells_per_image=args.tve_cells, head_init=args.tve_head_init,
        arch="shared",  # the README's TVE recipe (head_init="local" needs it)
    )  # fmt: skip


def _fastshap_config(args, family, num_classes):
    from fastxai_jax.explainers.learned import fastshap

    # with the target's trunk the players are its feature cells (stride 8 for small_cnn)
    default_patch = 8 if args.explainer_backbone == "target" else 16
    return fastshap.FastShapConfig(
        num_classes=num_classes, image_size=args.image_size,
        patch_size=args.patch_size or default_patch, backbone=args.explainer_backbone,
        hidden_size=args.hidden_size or 64, depth=args.depth or 2, num_heads=4,
        mlp_dim=4 * (args.hidden_size or 64), explainer_family="half", target_family=family,
        num_samples=args.fastshap_samples, fill=args.fastshap_fill,
    )  # fmt: skip
