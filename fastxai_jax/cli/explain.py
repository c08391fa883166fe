"""``fastxai explain``: attribution maps for images, written as ``.npy`` and PNG overlays.

Every method comes from the one table, :mod:`fastxai_jax.explainers.registry`;
a learned (amortised) explainer is loaded from ``--explainer-ckpt`` with
:func:`fastxai_jax.explainers.learned.runs.load`, which refuses a target whose
class count differs from the one it was trained for. ``--target C`` explains
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
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.cli._args import MAX_DATASET_IMAGES, add_target_seed_argument

DEFAULT_LAYERS = {
    "small_cnn": "conv_last",
    "vgg16": "features",
    "efficientnet_lite0": "head",
    **{f"resnet{d}": "layer4" for d in (18, 34, 50, 101, 152)},
}
TORCH_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


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


def _default_size(model: str) -> int:
    from fastxai_jax.models.zoo import MODEL_ZOO

    info = MODEL_ZOO.get(model)
    if info is None or "x" not in info.input_size:
        return 224
    return int(info.input_size.split("x")[0])


def load_images(paths: list[str], size: int) -> tuple[np.ndarray, list[str]]:
    """Reads image files into ``[N, size, size, 3]`` float32 in [0, 1]."""
    from skimage import io, transform

    images, names = [], []
    for name in paths:
        path = pathlib.Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"--images: no such file {name}")
        try:
            image = np.asarray(io.imread(path), np.float32)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"--images: cannot read {name} as an image ({type(err).__name__})"
            ) from None
        if image.max() > 1.0:
            image = image / 255.0
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        image = image[..., :3]
        images.append(transform.resize(image, (size, size, 3), anti_aliasing=True))
        names.append(path.stem)
    return np.stack(images).astype(np.float32), names


def load_target(args: argparse.Namespace, image_size: int):
    """Returns ``(module, variables, family)`` for ``--model``/``--weights``."""
    from fastxai_jax.models import build, load_pretrained
    from fastxai_jax.train import saved_target

    if args.weights and args.weights.endswith(TORCH_SUFFIXES):
        module, variables = load_pretrained(args.model, args.weights, num_classes=args.num_classes)
        return module, variables, build(args.model, num_classes=module.num_classes)[1]
    if args.weights:
        return saved_target.load_params_target(
            args.model, args.weights, image_size=image_size, num_classes=args.num_classes
        )
    if args.model == "small_cnn" and not args.untrained:
        return saved_target.load_workdir_target(args.workdir, target_seed=args.target_seed)
    if not args.untrained:
        raise ValueError(f"--model {args.model!r} needs --weights (or --untrained for a smoke run)")
    if args.num_classes is None:
        from fastxai_jax.data.groundtruth import NUM_CLASSES

        args.num_classes = NUM_CLASSES
    module, family = build(args.model, num_classes=args.num_classes)
    sample = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    init = jax.jit(lambda key, xs: module.init(key, xs, train=False))
    return module, init(jax.random.key(args.seed), sample), family


def make_explainer(args, module, variables, family, options) -> tuple[Callable, dict]:
    """``explain(x01, target, key) -> [B, H, W]`` for ``--method`` plus a cost record.

    For a learned method, ``target`` is passed to its explainer (``None`` for one
    that cannot condition on a class); the explainer is loaded once, here.
    """
    from fastxai_jax.explainers import registry
    from fastxai_jax.models import make_apply_fn

    apply_fn = make_apply_fn(module, family)
    name = args.method.lower()
    if registry.is_learned(name):
        from fastxai_jax.explainers.learned import runs

        if not args.explainer_ckpt:
            raise ValueError(f"--method {name!r} is a learned explainer: pass --explainer-ckpt")
        if options:
            raise ValueError(f"--option: learned method {name!r} takes no options")
        trained = runs.load(
            args.explainer_ckpt,
            apply_fn=apply_fn,
            target_params=variables,
            module=module,
            method=name,
        )
        if args.target is not None and not trained.explainer.conditions_on_class:
            raise ValueError(
                f"--target: {name!r} explains the target's predicted class only; drop --target"
            )

        def explain_learned(x, target, key):
            del key
            if not trained.explainer.conditions_on_class:
                target = None
            return trained.explain(x, target)

        queries = trained.explainer.target_queries_per_explain
        return explain_learned, {"forward": queries, "backward": 0}
    if name == "gradcam":
        options = {"layer": DEFAULT_LAYERS.get(args.model), **options}
        options.update(module=module, family=family)
    cost = registry.method_cost(name, **options)

    def explain(x, target, key):
        return registry.attribute(name, apply_fn, variables, x, target, key=key, **options)

    return explain, {"forward": cost.forward, "backward": cost.backward}


def list_methods() -> list[str]:
    """One line per method of the table: name, kind and cost per input (default options)."""
    from fastxai_jax.explainers import registry

    lines = []
    for name in registry.available_methods():
        if registry.is_learned(name):
            queries = registry.get_learned(name).target_queries_per_explain
            lines.append(f"{name:<22} learned    {queries} forward, 0 backward per input")
            continue
        spec = registry.get_method(name)
        try:
            cost = registry.method_cost(name)
            text = f"{cost.forward} forward, {cost.backward} backward per input"
        except (TypeError, ValueError):  # a cost that needs options
            text = "cost depends on options"
        kind = "stochastic" if spec.needs_key else "per-input"
        lines.append(f"{name:<22} {kind:<10} {text}")
    return lines


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
        from fastxai_jax.train.saved_target import saved_target_options

        saved_target_options(args.workdir, target_seed=args.target_seed)  # checked early
    elif args.target_seed is not None:
        raise ValueError("--target-seed trains the small_cnn target of --workdir: drop it")
    return options


def run(args: argparse.Namespace) -> int:
    from fastxai_jax.core import resolve_target
    from fastxai_jax.evaluation.run import takes_image_keys
    from fastxai_jax.explainers.registry import is_learned
    from fastxai_jax.explainers.rise import image_keys
    from fastxai_jax.models import make_apply_fn
    from fastxai_jax.viz import save_overlay

    if args.list:
        print("\n".join(list_methods()))
        return 0
    if getattr(args, "text", None) is not None:
        return run_text(args)
    options = check_args(args)
    size = args.image_size or _default_size(args.model)
    if args.images:
        images, names = load_images(args.images, size)
    else:
        from fastxai_jax.data.groundtruth import EVAL_SEED, make_benchmark

        num = 8 if args.num is None else args.num
        data = make_benchmark(num, seed=EVAL_SEED + args.seed, image_size=size)
        images = np.asarray(data["images"], np.float32)
        names = [f"groundtruth_{i:04d}" for i in range(len(images))]
    module, variables, family = load_target(args, size)
    explain, cost = make_explainer(args, module, variables, family, options)
    per_image = not is_learned(args.method) and takes_image_keys(args.method)

    apply_fn = make_apply_fn(module, family)
    predict = jax.jit(lambda v, xs: jnp.argmax(apply_fn(v, xs), axis=-1).astype(jnp.int32))
    out = pathlib.Path(args.out)
    key = jax.random.key(args.seed)
    maps, targets, seconds = [], [], 0.0
    for start in range(0, len(images), args.batch_size):
        x = jnp.asarray(images[start : start + args.batch_size])
        if args.target is None:
            target = predict(variables, x)
        else:
            target = resolve_target(apply_fn, variables, x, args.target)
        tic = time.perf_counter()
        # RISE draws masks per image index, so maps do not depend on --batch-size.
        batch_key = (
            image_keys(key, start, x.shape[0]) if per_image else jax.random.fold_in(key, start)
        )
        attribution = jax.block_until_ready(explain(x, target, batch_key))
        seconds += time.perf_counter() - tic
        maps.append(np.asarray(attribution))
        targets.append(np.asarray(target))
    maps_all, targets_all = np.concatenate(maps), np.concatenate(targets)
    np.save(out / "attributions.npy", maps_all)
    for name, image, attribution, target in zip(names, images, maps_all, targets_all, strict=True):
        np.save(out / f"{name}.npy", attribution)
        if not args.no_png:
            title = f"{args.method} · {args.model} · class {int(target)}"
            save_overlay(out / f"{name}.png", image, attribution, title=title)
    summary = {
        "method": args.method,
        "model": args.model,
        "num_images": len(images),
        "image_size": size,
        "targets": targets_all.tolist(),
        "seconds_per_image_incl_compile": seconds / len(images),
        "cost_per_input": cost,
        "options": {k: repr(v) for k, v in options.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {len(images)} attributions to {out}")
    return 0


def run_text(args: argparse.Namespace) -> int:
    """``--text``: token relevance of ``--model minilm_classifier`` on each sentence,
    printed as an ANSI highlight and written to ``OUT/text.html`` and ``OUT/text.json``."""
    from fastxai_jax.evaluation.text import ansi_highlight, html_page, html_sentence, token_strings
    from fastxai_jax.explainers import registry
    from fastxai_jax.explainers.tokens import bert_text_fns
    from fastxai_jax.models import load_pretrained
    from fastxai_jax.models.minilm import load_minilm, load_tokenizer, special_tokens, tokenize

    if args.images is not None or args.dataset is not None:
        raise ValueError("--text cannot be combined with --images or --dataset")
    if args.model != "minilm_classifier":
        raise ValueError(
            f"--model: --text needs a text model (minilm_classifier); got {args.model!r}"
        )
    name = args.method.lower()
    if name not in registry.available_methods("text"):
        known = ", ".join(registry.available_methods("text"))
        raise ValueError(f"--method {args.method!r} cannot explain text; text methods: {known}")
    tokenizer = load_tokenizer()
    input_ids, attention_mask = tokenize(tokenizer, args.text)
    workdir = "runs/minilm_classifier" if args.workdir == "runs/target" else args.workdir
    module, variables = load_pretrained("minilm_classifier", args.weights or workdir)
    special = special_tokens(tokenizer)
    fns = bert_text_fns(module, special.mask, (special.cls, special.sep))
    options = parse_options(args.option)
    explainer = None
    if name in registry.TOKEN_LEARNED_METHODS:
        from fastxai_jax.explainers.learned import fex_text

        if not args.explainer_ckpt:
            raise ValueError(f"--method {name!r} is a learned explainer: pass --explainer-ckpt")
        encoder, encoder_params = load_minilm(num_classes=2)
        explainer = fex_text.load(
            args.explainer_ckpt, fns, module=encoder, backbone_params=encoder_params
        )
    x = (input_ids, attention_mask)
    logits = fns.apply_embeds(
        variables, fns.embed(variables, jnp.asarray(input_ids)), attention_mask
    )
    predicted = np.asarray(jnp.argmax(logits, axis=-1))
    target = predicted if args.target is None else np.full(len(predicted), args.target)
    spec = registry.TOKEN_METHODS.get(name)
    key = jax.random.key(args.seed) if spec is not None and spec.needs_key else None
    relevance = np.asarray(
        registry.attribute(name, fns, variables, x, target, key=key, explainer=explainer, **options)
    )
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    strings = token_strings(tokenizer, input_ids, attention_mask)
    records, rows = [], []
    for i, tokens in enumerate(strings):
        values = relevance[i, : len(tokens)]
        print(f"[class {int(target[i])}] {ansi_highlight(tokens, values)}")
        rows.append(
            (
                f"class {int(target[i])} (predicted {int(predicted[i])})",
                html_sentence(tokens, values),
            )
        )
        records.append(
            {
                "text": args.text[i],
                "tokens": tokens,
                "relevance": values.tolist(),
                "target": int(target[i]),
                "predicted": int(predicted[i]),
            }  # fmt: skip
        )
    title = f"{name} on {args.model}"
    heading = f"{len(rows)} sentence(s), class explained per row"
    (out / "text.html").write_text(html_page(title, [(heading, rows)]), encoding="utf-8")
    (out / "text.json").write_text(json.dumps(records, indent=1))
    print(f"wrote {out / 'text.html'}")
    return 0
