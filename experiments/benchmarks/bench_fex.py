"""FEX explain throughput vs RISE(N) vs one explainer forward vs one target forward.

Not a test: one run on this machine, JSON out. The explainer's cost does not
depend on its weights, so by default a freshly initialised FEX of the
benchmark size is timed (pass ``--fex-workdir`` to time a trained one). Peak
memory is XLA's compiled estimate (arguments + outputs + temporaries) of each
jitted computation, which is available on CPU as well as on accelerators.

Command (expected on 2 CPU cores: FEX ≥ 30× faster per image than RISE-4000)::

  python experiments/benchmarks/bench_fex.py --num-images 32 --out bench_fex.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from fastxai_jax.configs import benchmarks as recipes  # noqa: E402
from fastxai_jax.data.groundtruth import NUM_CLASSES, make_benchmark  # noqa: E402
from fastxai_jax.explainers import rise  # noqa: E402
from fastxai_jax.explainers.learned import fex, runs  # noqa: E402
from fastxai_jax.models import build, make_apply_fn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also when loaded by path
from _bench_common import peak_bytes  # noqa: E402


def _time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-images", type=int, default=32)
    parser.add_argument("--rise-masks", type=int, default=4000)
    parser.add_argument("--rise-chunk", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fex-workdir", default=None, help="a trained FEX run (optional)")
    parser.add_argument("--target-workdir", default=None, help="a train-target workdir (optional)")
    parser.add_argument("--out", default="bench_fex.json")
    args = parser.parse_args()

    data = make_benchmark(args.num_images, seed=4242)
    x = jnp.asarray(data["images"])
    module, family = build("small_cnn", num_classes=NUM_CLASSES)
    if args.target_workdir:
        from fastxai_jax.train.checkpoint import load_params

        template = jax.eval_shape(module.init, jax.random.key(0), x[:1])
        variables, _ = load_params(os.path.join(args.target_workdir, "params"), template)
    else:
        variables = module.init(jax.random.key(0), x[:1])
    apply_fn = make_apply_fn(module, family)
    if args.fex_workdir:
        trained = runs.load(args.fex_workdir, method="fex")
        config, params = trained.explainer.config, trained.params
    else:
        config = recipes.bench_fex(NUM_CLASSES, family)
        params = fex.init_params(config, jax.random.key(1))
    target = jnp.argmax(apply_fn(variables, x), -1)

    fns = {
        "fex_explain": (
            jax.jit(lambda p, z: fex.upsample(fex.explain_grid(config, p, z), z.shape[1:3])),
            (params, x),
        ),
        "explainer_forward": (jax.jit(lambda p, z: fex.forward(config, p, z)), (params, x)),
        "target_forward": (jax.jit(apply_fn), (variables, x)),
        f"rise_{args.rise_masks}": (
            jax.jit(
                lambda v, z, t, k: rise.rise(
                    apply_fn,
                    v,
                    z,
                    t,
                    key=k,
                    num_masks=args.rise_masks,
                    chunk_size=args.rise_chunk,
                )
            ),
            (variables, x, target, jax.random.key(2)),
        ),
    }
    results: dict[str, dict[str, float | int | None]] = {}
    for name, (fn, fn_args) in fns.items():
        repeats = 1 if name.startswith("rise") else args.repeats
        seconds = _time(fn, *fn_args, repeats=repeats)
        results[name] = {
            "seconds_per_image": seconds / args.num_images,
            "images_per_second": args.num_images / seconds,
            "peak_bytes": peak_bytes(fn, *fn_args),
        }
        print(name, results[name], flush=True)
    rise_name = f"rise_{args.rise_masks}"
    fex_t = results["fex_explain"]["seconds_per_image"]
    summary = {
        "device": str(jax.devices()[0]),
        "num_devices_visible": jax.device_count(),
        "num_images": args.num_images,
        "fex_config": {k: v for k, v in config.__dict__.items() if v is not None},
        "results": results,
        "speedup_fex_vs_rise": results[rise_name]["seconds_per_image"] / fex_t,
        "time_saved_vs_rise_percent": 100 * (1 - fex_t / results[rise_name]["seconds_per_image"]),
        "fex_vs_explainer_forward": fex_t / results["explainer_forward"]["seconds_per_image"],
        "fex_vs_target_forward": fex_t / results["target_forward"]["seconds_per_image"],
    }
    rise_mem, fex_mem = results[rise_name]["peak_bytes"], results["fex_explain"]["peak_bytes"]
    if rise_mem and fex_mem:
        summary["memory_saved_vs_rise_percent"] = 100 * (1 - fex_mem / rise_mem)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=2))


if __name__ == "__main__":
    main()
