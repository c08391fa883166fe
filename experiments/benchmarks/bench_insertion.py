"""Insertion + deletion (RISE protocol) on ResNet-50: ours vs its limit vs a Python loop.

Three timings of the same pair of curves (``step_size = image_size`` pixels a
step, so 224 steps and 225 points on 224², insertion on blur, deletion on black):

* **ours**: ``fastxai_jax.metrics.insertion_deletion`` — one compiled function,
  steps evaluated ``chunk_size`` at a time with ``lax.map``;
* **limit**: the same number of forward passes (``2 × (T + 1) × N`` images, in
  batches of the size ours uses) of the jitted model alone, on a fixed batch;
* **loop**: the papers' code structure (RISE ``CausalMetric.evaluate``, MFABA's
  ``eval.py``): for each step, forward one batch of the N images, then perturb
  the next ``step`` pixels on the host with numpy indexing.

Prints the ratios ``ours / limit`` (target ≤ 1.2) and ``loop / ours`` and saves
them as JSON. Small CPU run::

  JAX_PLATFORMS=cpu python experiments/benchmarks/bench_insertion.py \\
      --num 2 --image-size 32 --out runs/bench_insertion_cpu.json

Full size (GPU)::

  python experiments/benchmarks/bench_insertion.py --num 16 --image-size 224
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.configs import benchmarks as recipes
from fastxai_jax.metrics import insertion_deletion


def load_model(name: str, image_size: int, seed: int):
    """``(apply_fn, params, note)``: the zoo's model with random weights, or a fallback CNN."""
    sample = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    try:
        from fastxai_jax.models import build, make_apply_fn

        module, family = build(name, num_classes=1000)
        variables = module.init(jax.random.key(seed), sample, train=False)
        return make_apply_fn(module, family), variables, f"{name} (random init)"
    except (ImportError, ValueError) as err:  # models not available: a small stand-in
        import flax.linen as nn

        class Fallback(nn.Module):
            @nn.compact
            def __call__(self, x):
                for features in (32, 64, 128):
                    x = nn.relu(nn.Conv(features, (3, 3), strides=(2, 2))(x))
                return nn.Dense(1000)(jnp.mean(x, axis=(1, 2)))

        module = Fallback()
        variables = module.init(jax.random.key(seed), sample)
        return module.apply, variables, f"fallback CNN ({err})"


def time_calls(fns: dict, repeats: int) -> dict[str, float]:
    """Best wall time of each ``fn()`` over ``repeats`` rounds (after one warm-up each).

    The functions are timed in turn within each round, so that a change in the
    machine's load affects all of them alike.
    """
    for fn in fns.values():
        jax.block_until_ready(fn())
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def loop_insertion_deletion(apply_fn, params, x, attribution, step, substrates):
    """The papers' loop: per step, one forward of the batch, then a host-side perturbation."""
    forward = jax.jit(lambda p, images: jax.nn.softmax(apply_fn(p, images), axis=-1))
    batch, height, width, channels = x.shape
    num_pixels = height * width
    num_steps = math.ceil(num_pixels / step)
    target = np.asarray(jnp.argmax(apply_fn(params, x), axis=-1))
    order = np.argsort(-np.asarray(attribution).reshape(batch, -1), axis=1, kind="stable")
    curves = {}
    rows = np.arange(batch)[:, None]
    for mode in ("insertion", "deletion"):
        sub = np.asarray(substrates[mode]).reshape(batch, num_pixels, channels)
        img = np.asarray(x).reshape(batch, num_pixels, channels)
        start, finish = (sub.copy(), img) if mode == "insertion" else (img.copy(), sub)
        scores = np.zeros((batch, num_steps + 1))
        for i in range(num_steps + 1):
            probs = forward(params, jnp.asarray(start.reshape(batch, height, width, channels)))
            scores[:, i] = np.asarray(probs)[np.arange(batch), target]
            if i < num_steps:
                coords = order[:, step * i : step * (i + 1)]
                start[rows, coords] = finish[rows, coords]
        curves[mode] = scores
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--num", type=int, default=4, help="images N")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--chunk-size", type=int, default=None, help="steps per forward")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--out", default="runs/bench_insertion.json")
    args = parser.parse_args()

    size, num = args.image_size, args.num
    apply_fn, params, model_note = load_model(args.model, size, args.seed)
    keys = jax.random.split(jax.random.key(args.seed), 2)
    x = jax.random.uniform(keys[0], (num, size, size, 3))
    attribution = jax.random.normal(keys[1], (num, size, size))
    step = size  # RISE: 224 pixels a step on 224²
    protocol = recipes.bench_insertion()
    num_points = math.ceil(size * size / step) + 1
    chunk = args.chunk_size or max(1, 128 // (2 * num))
    chunk = min(chunk, num_points)
    chunk = math.ceil(num_points / math.ceil(num_points / chunk))  # as insertion_deletion does

    def ours():
        result = insertion_deletion(
            apply_fn,
            params,
            x,
            attribution,
            step_size=step,
            insertion_substrate=protocol.insertion_substrate,
            deletion_substrate=protocol.deletion_substrate,
            chunk_size=chunk,
        )
        return result["insertion"].curve, result["deletion"].curve

    # The limit: the same forward passes, same batch size, nothing else.
    num_forwards = math.ceil(num_points / chunk)
    forward_batch = jax.random.uniform(keys[0], (2 * num * chunk, size, size, 3))
    forward = jax.jit(apply_fn)

    def limit():
        out = None
        for _ in range(num_forwards):
            out = forward(params, forward_batch)
        return out

    fns = {"ours": ours, "limit": limit}
    if not args.skip_loop:
        substrates = {
            "insertion": protocol.insertion_substrate.image(x),
            "deletion": protocol.deletion_substrate.image(x),
        }
        fns["loop"] = lambda: loop_insertion_deletion(
            apply_fn, params, x, attribution, step, substrates
        )
    times = time_calls(fns, args.repeats)
    t_ours, t_limit = times["ours"], times["limit"]

    record = {
        "model": model_note,
        "device": str(jax.devices()[0]),
        "num_images": num,
        "image_size": size,
        "step_size": step,
        "curve_points": num_points,
        "forward_images": 2 * num_points * num,
        "forward_images_padded": 2 * num * chunk * num_forwards,
        "chunk_size": chunk,
        "images_per_forward_ours": 2 * num * chunk,
        "ours_s": t_ours,
        "limit_s": t_limit,
        "ours_over_limit": t_ours / t_limit,
    }
    if not args.skip_loop:
        t_loop = times["loop"]
        ours_curves, loop_curves = ours(), fns["loop"]()
        record.update(
            loop_s=t_loop,
            loop_over_ours=t_loop / t_ours,
            max_abs_diff_vs_loop=float(
                max(
                    np.abs(np.asarray(ours_curves[0]) - loop_curves["insertion"]).max(),
                    np.abs(np.asarray(ours_curves[1]) - loop_curves["deletion"]).max(),
                )
            ),
        )
    print(json.dumps(record, indent=1))
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
