"""DAX, LTX, TVE and FastSHAP on the embedded benchmark: cost and quality.

Not a test: one run on this machine, JSON out. For each method: training time,
explanation time per image, target-model queries per image, peak memory (XLA's
compiled estimate of the explain computation), and quality against the
planted-object ground truth (deletion AUC, lower is better; pointing game,
higher is better) next to a random map. DAX is also timed batched-``vmap``ped
vs one input at a time (the reference implementations' way) as a ratio. TVE
is pre-trained once against the target's frozen encoder (its pooled features)
and explains three linear heads it never saw: the target's own head and heads
trained on the planted object's shape only and colour only. Each TVE entry also
scores the oracle, the map from the encoder's own cell embeddings (what a
perfectly pre-trained TVE predicts): on the shape-only head even the oracle only
ties the pixel-level random map on pixel deletion, so there the transfer rule,
not the pre-training, is the limit.

DAX holds its student fixed in the complement term (``--dax-complement
frozen``; ``train`` is the authors' shared update), zeroes the authors' 7/128
border of the explanation and averages the masks of all epochs.

TVE and FastSHAP start from a copy of the target's conv trunk (``--backbone
target``; ``vit`` = a fresh ViT, which at these budgets learns nothing per
cell), TVE's token mixing starts local (``--tve-head-init local``) and both run
longer at a higher rate than LTX (``--tve-steps 1000 --tve-lr 3e-3``,
``--fastshap-steps 900 --fastshap-lr 3e-3``); FastSHAP masks players with black
(``--fastshap-fill -1``, the substrate the deletion metric uses; the authors'
0 is the mean pixel). Besides the pixel-level random
map, ``random_8x8_cells`` is a random map on the 8×8 grid these explainers
work on.

Command (2 CPU cores, ~25 min with the defaults; DAX alone is the slowest)::

  python experiments/benchmarks/bench_learned.py --target-dir runs/demo/target \\
      --num-train 2048 --methods ltx,tve,fastshap --out bench_learned.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from fastxai_jax import metrics  # noqa: E402
from fastxai_jax.configs import benchmarks as recipes  # noqa: E402
from fastxai_jax.data.groundtruth import NUM_CLASSES, make_benchmark  # noqa: E402
from fastxai_jax.explainers import dax  # noqa: E402
from fastxai_jax.explainers.learned import fastshap, ltx, make_trainer, tve  # noqa: E402
from fastxai_jax.models import make_apply_fn  # noqa: E402
from fastxai_jax.train import target as target_lib  # noqa: E402
from fastxai_jax.train.checkpoint import Checkpointer  # noqa: E402
from fastxai_jax.train.loop import fit  # noqa: E402
from fastxai_jax.train.target import load_or_train_target  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also when loaded by path
from _bench_common import peak_bytes  # noqa: E402


def _timed(fn, *args):
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def load_target(target_dir: str, steps: int | None = None):
    """The benchmark small CNN in ``target_dir``: loaded with the options it was
    trained with (from its saved config), else trained there with the defaults."""
    if (pathlib.Path(target_dir) / "params").exists():
        return target_lib.load_target(target_dir)
    return load_or_train_target(target_dir, progress=False, steps=steps)


def quality(apply_fn, params, x, maps, masks, target) -> dict[str, float]:
    """Deletion AUC and pointing game against the planted-object mask.

    ``deletion_auc`` uses the demo's protocol (pixels ranked by the map, 224 a
    step, replaced with black); ``deletion_auc_blur_patch4`` ranks 4×4 patches
    and replaces them with a blurred copy (16 steps).
    """
    pixel = metrics.deletion(apply_fn, params, x, maps, target, substrate="zeros")
    patch = metrics.deletion(
        apply_fn, params, x, maps, target, num_steps=16, granularity="patch", patch_size=4,
        substrate="blur",
    )  # fmt: skip
    hits = metrics.pointing_game(maps, masks)
    centre_hits = metrics.pointing_game(maps, masks, ties="centre")
    return {
        "deletion_auc": float(jnp.mean(pixel.auc)),
        "deletion_auc_blur_patch4": float(jnp.mean(patch.auc)),
        "pointing_game": float(jnp.mean(hits)),
        "pointing_game_centre_ties": float(jnp.mean(centre_hits)),
    }


def _fit_snapshots(state, update, batch_fn, num_steps, explain, every):
    """``fit`` with a checkpoint every ``every`` steps, then the maps of each one.

    Returns ``(state, history, train_seconds, snapshots)``, ``snapshots`` a list of
    ``(step, seconds into training, explain(params))`` read back from the
    checkpoints, so that evaluating them takes no training time.
    """
    with tempfile.TemporaryDirectory() as ckpt_dir:
        start = time.perf_counter()
        state, history = fit(
            state, update, batch_fn, num_steps=num_steps, key=jax.random.key(1),
            progress=False, checkpoint_dir=ckpt_dir, checkpoint_every=every,
            max_to_keep=num_steps // every + 1,
        )  # fmt: skip
        train_s = time.perf_counter() - start
        snapshots = []
        with Checkpointer(ckpt_dir) as ckpt:
            for step in ckpt.all_steps():
                params = ckpt.restore(state, step)[0].params
                snapshots.append((step, history[step - 1]["time"], explain(params)))
    return state, history, train_s, snapshots


def time_to_quality(snapshots, quality_fn, reference) -> dict:
    """Quality of each snapshot and the first one that beats ``reference`` (a random
    map's quality) on both deletion AUC and the pointing game."""
    trajectory, first = [], None
    for step, seconds, maps in snapshots:
        q = quality_fn(maps)
        trajectory.append({"step": step, "train_seconds": seconds, **q})
        beats = (q["deletion_auc"] < reference["deletion_auc"]
                 and q["pointing_game"] > reference["pointing_game"])  # fmt: skip
        if beats and first is None:
            first = {"step": step, "train_seconds": seconds}
    return {"quality_trajectory": trajectory, "first_beats_random": first}


def _batches(images, batch_size, seed):
    order = np.random.default_rng(seed).permutation(len(images))

    def batch_fn(step):
        start = (step * batch_size) % (len(images) - batch_size + 1)
        return jnp.asarray(images[order[start : start + batch_size]])

    return batch_fn


def run_ltx(module, variables, apply_fn, train, test_x, args):
    config = ltx.LtxConfig(kind="cnn", family="half", lam=args.ltx_lam, finetune_steps=10)
    # the README's recipe: peak rate after the warm-up, so that stage B (which
    # continues the step count) does not run at the authors' decayed lr 0
    optimizer = ltx.default_optimizer(args.steps, schedule="constant")
    learned = ltx.make(config, apply_fn, variables, module=module)
    init, update = make_trainer(learned, optimizer)
    state = init(jax.random.key(0), train[:2])
    state, history, train_s, snapshots = _fit_snapshots(
        state, update, _batches(train, 32, 1), args.steps,
        lambda p: learned.explain(p, test_x), args.snapshot_every,
    )  # fmt: skip
    maps_a, explain_s = _timed(learned.explain, state.params, test_x)
    finetune = ltx.make_finetune(config, optimizer, apply_fn, variables, module=module)
    (maps_b, _), finetune_s = _timed(finetune, state, test_x)
    steps = config.finetune_steps
    return {
        "stage_a": (maps_a, train_s, explain_s, 0, history),
        # stage B per input: steps × (1 fwd + 1 bwd through the target) + steps × 10 POS
        "stage_b": (maps_b, train_s, finetune_s, steps + 10 * steps, history),
        "peak_bytes": peak_bytes(learned.explain, state.params, test_x),
        "snapshots": snapshots,
    }


def _train_head(features, labels, num_classes, steps=300):
    params = {"kernel": jnp.zeros((features.shape[1], num_classes)), "bias": jnp.zeros(num_classes)}
    opt = optax.adam(1e-2)
    state = opt.init(params)

    def loss(p):
        logits = features @ p["kernel"] + p["bias"][None, :]
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    for _ in range(steps):
        params, state = step(params, state)
    return params


def run_tve(module, variables, family, train, train_labels, test_x, args):
    encoder_fn = tve.encoder_from_module(module, family)
    embed_dim = int(jax.eval_shape(encoder_fn, variables, test_x[:1]).shape[-1])
    config = tve.TveConfig(
        embed_dim=embed_dim, image_size=64, grid=8, radius=1, patch_size=8, hidden_size=64,
        depth=2, num_heads=4, mlp_dim=128, head_hidden=64, head_layers=3,
        explainer_family="half", encoder_family=family, cells_per_image=args.tve_cells,
        backbone=args.backbone, head_init=args.tve_head_init, arch="shared",
    )  # fmt: skip
    tve_module = module if args.backbone == "target" else None
    learned = tve.make(config, encoder_fn, variables, module=tve_module)
    init, update = make_trainer(
        learned, tve.default_optimizer(args.tve_steps, learning_rate=args.tve_lr)
    )
    state = init(jax.random.key(0), train[:2])

    def head_logits(head, p, x):
        return encoder_fn(p, x) @ head["kernel"] + head["bias"][None, :]

    own_head = tve.linear_head(variables)
    own_target = jnp.argmax(head_logits(own_head, variables, test_x), axis=-1)
    state, history, train_s, snapshots = _fit_snapshots(
        state, update, _batches(train, 32, 2), args.tve_steps,
        lambda p: tve.explain_with_head(config, p, test_x, own_head, own_target,
                                        module=tve_module),
        args.snapshot_every,
    )  # fmt: skip
    feats = jax.jit(encoder_fn)(variables, jnp.asarray(train))
    labels = jnp.asarray(train_labels)
    # class = colour_index·4 + shape_index; heads trained on the frozen encoder's features
    heads = {
        "target_head": (own_head, None),
        "shape_only_head": (_train_head(feats, labels % 4, 4), args.test_labels % 4),
        "colour_only_head": (_train_head(feats, labels // 4, 2), args.test_labels // 4),
    }
    # what a perfectly pre-trained TVE would give: the encoder's own cell embeddings
    oracle = jax.jit(lambda x: tve.oracle_embeddings(config, encoder_fn, variables, x))(test_x)
    out = {}
    for name, (head, head_labels) in heads.items():
        head_apply = functools.partial(head_logits, head)
        target = jnp.argmax(head_apply(variables, test_x), axis=-1)
        explain = lambda p, x, head=head, target=target: tve.explain_with_head(
            config, p, x, head, target, module=tve_module
        )
        maps, explain_s = _timed(explain, state.params, test_x)
        oracle_maps = tve.embeddings_to_map(config, *oracle, head, target, test_x.shape[1:3])
        accuracy = None
        if head_labels is not None:
            accuracy = float(jnp.mean(target == jnp.asarray(head_labels)))
        out[name] = (maps, train_s, explain_s, 0, history, head_apply, target, accuracy,
                     oracle_maps)  # fmt: skip
    out["peak_bytes"] = peak_bytes(
        lambda p, x: tve.predict_embeddings(config, p, x, tve_module), state.params, test_x
    )
    out["snapshots"] = snapshots  # of the target head's maps
    return out


def run_fastshap(module, apply_fn, variables, family, train, test_x, args):
    target_backbone = args.backbone == "target"
    config = fastshap.FastShapConfig(
        num_classes=NUM_CLASSES, image_size=64, patch_size=8 if target_backbone else 16,
        hidden_size=64, depth=2, num_heads=4, mlp_dim=128, explainer_family="half",
        target_family=family, num_samples=16, fill=args.fastshap_fill, backbone=args.backbone,
    )  # fmt: skip
    fs_module = module if target_backbone else None
    learned = fastshap.make(config, apply_fn, variables, module=fs_module)
    init, update = make_trainer(
        learned, fastshap.default_optimizer(args.fastshap_steps, learning_rate=args.fastshap_lr)
    )
    state = init(jax.random.key(0), train[:2])
    target = jnp.argmax(apply_fn(variables, test_x), axis=-1)
    state, history, train_s, snapshots = _fit_snapshots(
        state, update, _batches(train, 32, 3), args.fastshap_steps,
        lambda p: learned.explain(p, test_x, target), args.snapshot_every,
    )  # fmt: skip
    maps, explain_s = _timed(lambda p, x: learned.explain(p, x, target), state.params, test_x)
    peak = peak_bytes(
        lambda p, x: fastshap.player_values(config, p, x, fs_module), state.params, test_x
    )
    return maps, train_s, explain_s, 0, history, peak, snapshots


def run_dax(apply_fn, variables, test_x, target, args):
    # the demo's DAX recipe, with this run's budget; batching is what is timed here
    options = recipes.bench_learned_dax(
        args.dax_samples, args.dax_epochs, args.dax_complement, args.dax_fill
    )
    key = jax.random.key(0)
    maps, batched_s = _timed(
        lambda x, t: dax.dax(apply_fn, variables, x, t, key=key, **options), test_x, target
    )
    n_single = min(4, test_x.shape[0])
    single = lambda x, t: dax.dax(apply_fn, variables, x, t, key=key, **options)
    jax.block_until_ready(single(test_x[:1], target[:1]))  # compile once
    start = time.perf_counter()
    for b in range(n_single):
        jax.block_until_ready(single(test_x[b : b + 1], target[b : b + 1]))
    single_s = (time.perf_counter() - start) / n_single
    config = dax.DaxConfig(**{k: v for k, v in options.items() if k != "patch_size"})
    labels = jnp.broadcast_to(dax.grid_segments((64, 64), 8)[0], (test_x.shape[0], 64, 64))
    peak = peak_bytes(
        lambda x, t: dax._dax_batched(
            apply_fn, variables, x, t, jax.random.split(key, x.shape[0]), labels,
            jnp.ones((x.shape[0], 64)), config,
        ),
        test_x, target,
    )  # fmt: skip
    per_image = batched_s / test_x.shape[0]
    return maps, per_image, single_s, peak, options


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target-dir", required=True)
    parser.add_argument("--target-steps", type=int, default=None)
    parser.add_argument("--num-train", type=int, default=512)
    parser.add_argument("--num-test", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--ltx-lam", type=float, default=2.0)
    parser.add_argument("--dax-samples", type=int, default=256)
    parser.add_argument("--dax-epochs", type=int, default=6)
    parser.add_argument("--dax-complement", choices=["train", "frozen"], default="frozen")
    parser.add_argument(
        "--dax-fill",
        default="0",
        type=dax.parse_fill,
        help="'mean' (authors) or a number in [0, 1]",
    )
    parser.add_argument(
        "--backbone", default="target", choices=["vit", "target"], help="TVE/FastSHAP backbone"
    )
    parser.add_argument("--tve-head-init", default="local", choices=["random", "local"])
    parser.add_argument("--tve-steps", type=int, default=1000)
    parser.add_argument("--tve-lr", type=float, default=3e-3)
    parser.add_argument("--fastshap-steps", type=int, default=900)
    parser.add_argument("--fastshap-lr", type=float, default=3e-3)
    parser.add_argument(
        "--fastshap-fill", type=float, default=-1.0,
        help="masked value in the target's normalised space (-1: black for the small CNN)",
    )  # fmt: skip
    parser.add_argument("--tve-cells", type=int, default=1, help="TVE cells supervised per image")
    parser.add_argument("--methods", default="dax,ltx,tve,fastshap")
    parser.add_argument(
        "--snapshot-every", type=int, default=100,
        help="steps between the checkpoints scored for time to quality",
    )  # fmt: skip
    parser.add_argument("--out", default="bench_learned.json")
    recipe = recipes.bench_learned()  # the defaults above, in one place
    seeds = {name: recipe.pop(name) for name in ("train_seed", "test_seed")}
    parser.set_defaults(**recipe)
    args = parser.parse_args(argv)
    module, variables, family = load_target(args.target_dir, args.target_steps)
    apply_fn = make_apply_fn(module, family)
    train = make_benchmark(args.num_train, seed=seeds["train_seed"], image_size=64)
    test = make_benchmark(args.num_test, seed=seeds["test_seed"], image_size=64)
    args.test_labels = test["labels"]
    test_x = jnp.asarray(test["images"])
    masks = jnp.asarray(test["masks"])
    target = jnp.argmax(apply_fn(variables, test_x), axis=-1).astype(jnp.int32)
    results: dict = {
        "device": str(jax.devices()[0]),
        "num_test": args.num_test,
        "target_test_accuracy": float(jnp.mean(target == jnp.asarray(test["labels"]))),
        "methods": {},
    }
    random_map = jax.random.uniform(jax.random.key(123), masks.shape)
    results["random"] = quality(apply_fn, variables, test_x, random_map, masks, target)
    # A random map on the 8×8 cell grid most learned explainers here explain on: pixel-level
    # random deletion breaks the image up everywhere at once, which this target's
    # probability drops under faster than under the removal of any one region.
    random_cells = jax.random.uniform(jax.random.key(124), masks.shape[:1] + (8, 8))
    random_cells = jnp.repeat(jnp.repeat(random_cells, 8, axis=1), 8, axis=2)
    results["random_8x8_cells"] = quality(apply_fn, variables, test_x, random_cells, masks, target)

    def on_target(maps):
        return quality(apply_fn, variables, test_x, maps, masks, target)

    def record(name, maps, train_s, explain_s, queries, history=None, peak=None, **extra):
        entry = quality(extra.pop("q_apply", apply_fn), variables, test_x, maps, masks,
                        extra.pop("q_target", target))  # fmt: skip
        entry.update(
            train_seconds=train_s, explain_seconds_per_image=explain_s / args.num_test,
            target_queries_per_image=queries, peak_bytes=peak, **extra,
        )  # fmt: skip
        if history:
            losses = [h["loss"] for h in history]
            entry["loss_first10"] = float(np.mean(losses[:10]))
            entry["loss_last10"] = float(np.mean(losses[-10:]))
        results["methods"][name] = entry
        print(name, json.dumps(entry))

    methods = args.methods.split(",")
    if "dax" in methods:
        maps, per_image, single_s, peak, options = run_dax(
            apply_fn, variables, test_x, target, args
        )
        record("dax", maps, 0.0, per_image * args.num_test, options["num_samples"], peak=peak,
               one_at_a_time_seconds_per_image=single_s,
               batched_speedup=single_s / per_image, options=options)  # fmt: skip
    if "ltx" in methods:
        out = run_ltx(module, variables, apply_fn, train["images"], test_x, args)
        to_quality = time_to_quality(out["snapshots"], on_target, results["random"])
        for stage in ("stage_a", "stage_b"):
            maps, train_s, explain_s, queries, history = out[stage]
            extra = to_quality if stage == "stage_a" else {}
            record(f"ltx_{stage}", maps, train_s, explain_s, queries, history, out["peak_bytes"],
                   **extra)  # fmt: skip
    if "tve" in methods:
        out = run_tve(module, variables, family, train["images"], train["labels"], test_x, args)
        for head_name in ("target_head", "shape_only_head", "colour_only_head"):
            maps, train_s, explain_s, queries, history, head_apply, head_target, acc, oracle = out[
                head_name
            ]
            on_head = lambda m: quality(head_apply, variables, test_x, m, masks, head_target)  # noqa: B023
            extra = {}
            if head_name == "target_head":
                extra = time_to_quality(out["snapshots"], on_head, on_head(random_map))
            record(f"tve_{head_name}", maps, train_s, explain_s, queries, history,
                   out["peak_bytes"], q_apply=head_apply, q_target=head_target, **extra,
                   random_on_this_head=on_head(random_map),
                   random_8x8_cells_on_this_head=on_head(random_cells),
                   oracle_embeddings_on_this_head=on_head(oracle), head_accuracy=acc)  # fmt: skip
    if "fastshap" in methods:
        maps, train_s, explain_s, queries, history, peak, snapshots = run_fastshap(
            module, apply_fn, variables, family, train["images"], test_x, args
        )
        record("fastshap", maps, train_s, explain_s, queries, history, peak,
               **time_to_quality(snapshots, on_target, results["random"]))  # fmt: skip
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
