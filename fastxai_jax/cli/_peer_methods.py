"""``fastxai train-explainer --method {dax,ltx,tve,fastshap}`` entries.

Imported by :mod:`fastxai_jax.cli.train_explainer`, which owns the table. The
amortised methods (LTX stage A, TVE, FastSHAP) train through the shared
:func:`~fastxai_jax.train.loop.fit` (checkpoints in ``WORKDIR/checkpoints``,
resumed automatically; ``--devices N`` data parallel) and save the explainer in
``WORKDIR/explainer`` for ``fastxai explain --method NAME --explainer-ckpt
WORKDIR``. DAX has nothing to amortise: ``train-explainer --method dax`` runs
the vmapped per-input fits on ``--num-train`` benchmark images and saves the
maps (``WORKDIR/dax_maps.npy``); ``fastxai explain --method dax`` runs it on
any images through the method registry.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.cli.train_explainer import MethodEntry, register_method


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


def _fit_and_save(args, name, learned, config, images) -> dict[str, Any]:
    from fastxai_jax.train.checkpoint import save_params
    from fastxai_jax.train.loop import fit

    workdir = pathlib.Path(args.workdir)
    mesh = None
    if args.devices:
        from fastxai_jax.train.sharding import data_mesh

        mesh = data_mesh(args.devices)
    run_config = {"method": name, name: dataclasses.asdict(config)}
    state = learned.init(jax.random.key(args.seed), jnp.asarray(images[:2]))
    state, history = fit(
        state,
        learned.update,
        _batch_fn(images, args.batch_size, args.seed),
        num_steps=args.steps,
        key=jax.random.key(args.seed + 1),
        checkpoint_dir=workdir / "checkpoints",
        checkpoint_every=args.checkpoint_every,
        log_path=workdir / "train_log.jsonl",
        mesh=mesh,
        progress=not args.no_progress,
        config=run_config,
    )
    save_params(workdir / "explainer", jax.device_get(state.params), run_config)
    losses = [h["loss"] for h in history]
    return {
        "method": name,
        "config": run_config[name],
        "final_loss": losses[-1] if losses else None,
    }


def _load(ckpt: str, name: str, config_cls, template_fn):
    from fastxai_jax.train.checkpoint import load_params

    path = pathlib.Path(ckpt) / "explainer"
    if not path.exists():
        raise FileNotFoundError(f"no trained {name} explainer in {path} (run train-explainer)")
    _, saved = load_params(path)
    if not isinstance(saved, dict) or saved.get("method") != name:
        raise ValueError(f"{path} does not hold a {name} explainer (config {saved!r})")
    fields = dict(saved[name])
    for key, value in fields.items():
        if isinstance(value, list):
            fields[key] = tuple(value)
    config = config_cls(**fields)
    params, _ = load_params(path, template=jax.eval_shape(lambda: template_fn(config)))
    return config, jax.tree.map(jnp.asarray, params)


def _trunk(config, module):
    """The target module when the explainer's ``backbone`` is ``"target"``, else ``None``."""
    return module if getattr(config, "backbone", "vit") == "target" else None


def _dax_fill(text: str) -> str | float:
    from fastxai_jax.explainers.dax import parse_fill

    try:
        return parse_fill(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _arguments(parser: argparse.ArgumentParser) -> None:
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
        "--dax-fill", default="mean", type=_dax_fill,
        help="DAX off-segment fill: 'mean' (own mean colour, authors) or a number in [0, 1]",
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


def _train_dax(args, target) -> dict[str, Any]:
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


# ------------------------------------------------------------------------ LTX


def _ltx_config(args, family, target_name):
    from fastxai_jax.explainers import ltx

    kind = "vit" if target_name.startswith("vit") else "cnn"
    feature = {"small_cnn": "conv_last", "vgg16": "features"}.get(target_name, "layer4")
    return ltx.LtxConfig(
        kind=kind, family=family, feature=feature, lam=args.ltx_lam or 30.0,
        penalty=args.ltx_penalty, learning_rate=args.lr or 2e-3, total_steps=args.steps,
    )  # fmt: skip


def _train_ltx(args, target) -> dict[str, Any]:
    from fastxai_jax.explainers import ltx

    module, variables, family, apply_fn = target
    config = _ltx_config(args, family, args.target)
    learned = ltx.make(config, apply_fn, variables, module, variables)
    return _fit_and_save(args, "ltx", learned, config, _data(args)["images"])


def _ltx_loader(ckpt, *, module, variables, family, apply_fn, options=None, **_):
    from fastxai_jax.explainers import ltx

    size = getattr(module, "image_size", 64)  # CNN heads do not depend on the size

    def template(config):
        sample = jnp.zeros((1, size, size, 3), jnp.float32)
        return ltx.init_explainer_params(config, module, variables, sample, jax.random.key(0))

    config, params = _load(ckpt, "ltx", ltx.LtxConfig, template)
    masks = jax.jit(ltx.make_masks_fn(config, module, variables))
    return lambda x01: masks(params, jnp.asarray(x01, jnp.float32))


# ------------------------------------------------------------------------ TVE


def _tve_config(args, family, embed_dim):
    from fastxai_jax.explainers import tve

    grid = args.tve_grid or args.image_size // 8
    return tve.TveConfig(
        embed_dim=embed_dim, image_size=args.image_size, grid=grid, radius=args.tve_radius,
        patch_size=args.patch_size or 8, hidden_size=args.hidden_size or 64,
        depth=args.depth or 2, num_heads=4, mlp_dim=4 * (args.hidden_size or 64),
        explainer_family="half", encoder_family=family, learning_rate=args.lr or 1e-3,
        total_steps=args.steps, backbone=args.explainer_backbone, cells_per_image=args.tve_cells,
        head_init=args.tve_head_init,
    )  # fmt: skip


def _train_tve(args, target) -> dict[str, Any]:
    from fastxai_jax.explainers import tve

    module, variables, family, _ = target
    encoder_fn = tve.encoder_from_module(module, family)
    images = _data(args)["images"]
    embed_dim = int(jax.eval_shape(encoder_fn, variables, jnp.asarray(images[:1])).shape[-1])
    config = _tve_config(args, family, embed_dim)
    learned = tve.make(config, encoder_fn, variables, module=_trunk(config, module))
    return _fit_and_save(args, "tve", learned, config, images)


def _tve_loader(ckpt, *, module, variables, family, apply_fn, options=None, **_):
    from fastxai_jax.explainers import tve

    config, params = _load(
        ckpt, "tve", tve.TveConfig,
        lambda c: tve.init_params(c, jax.random.key(0), module=_trunk(c, module),
                                  variables=variables),
    )  # fmt: skip
    encoder_fn = tve.encoder_from_module(module, family)
    head = tve.linear_head(variables)

    def explain(x01):
        x01 = jnp.asarray(x01, jnp.float32)
        # the classifier's prediction from its own head on the encoder (the class to explain)
        logits = encoder_fn(variables, x01) @ head["kernel"] + head["bias"][None, :]
        target = jnp.argmax(logits, axis=-1)
        return tve.explain_with_head(
            config, params, x01, head, target, module=_trunk(config, module)
        )

    return explain


# ------------------------------------------------------------------- FastSHAP


def _fastshap_config(args, family, num_classes):
    from fastxai_jax.explainers import fastshap

    # with the target's trunk the players are its feature cells (stride 8 for small_cnn)
    default_patch = 8 if args.explainer_backbone == "target" else 16
    return fastshap.FastShapConfig(
        num_classes=num_classes, image_size=args.image_size,
        patch_size=args.patch_size or default_patch, backbone=args.explainer_backbone,
        hidden_size=args.hidden_size or 64, depth=args.depth or 2, num_heads=4,
        mlp_dim=4 * (args.hidden_size or 64), explainer_family="half", target_family=family,
        num_samples=args.fastshap_samples, learning_rate=args.lr or 1e-3, total_steps=args.steps,
        fill=args.fastshap_fill,
    )  # fmt: skip


def _train_fastshap(args, target) -> dict[str, Any]:
    from fastxai_jax.explainers import fastshap

    module, variables, family, apply_fn = target
    images = _data(args)["images"]
    num_classes = int(jax.eval_shape(apply_fn, variables, jnp.asarray(images[:1])).shape[-1])
    config = _fastshap_config(args, family, num_classes)
    learned = fastshap.make(config, apply_fn, variables, module=_trunk(config, module))
    return _fit_and_save(args, "fastshap", learned, config, images)


def _fastshap_loader(ckpt, *, module, variables, family, apply_fn, options=None, **_):
    from fastxai_jax.explainers import fastshap

    config, params = _load(
        ckpt, "fastshap", fastshap.FastShapConfig,
        lambda c: fastshap.init_params(c, jax.random.key(0), module=_trunk(c, module),
                                       variables=variables),
    )  # fmt: skip
    learned = fastshap.make(config, apply_fn, variables, module=_trunk(config, module))
    return lambda x01: learned.explain(params, jnp.asarray(x01, jnp.float32))


register_method("dax", MethodEntry(_train_dax, _arguments, None))
register_method("ltx", MethodEntry(_train_ltx, None, _ltx_loader))
register_method("tve", MethodEntry(_train_tve, None, _tve_loader))
register_method("fastshap", MethodEntry(_train_fastshap, None, _fastshap_loader))
