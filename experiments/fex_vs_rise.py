"""FEX against RISE on more held-out images than the demo scores, per class.

The demo scores 32 held-out images; this checks its FEX − RISE comparison on a
larger, fresh set (images no model was fit on and that the demo does not
score), with a 95% bootstrap interval per metric and the deletion gap split by
the class explained, next to the target's probability of that class on an
all-black image (the value every deletion curve ends at).

Command (after ``make demo``; 14 minutes for 128 images on 2 CPU cores shared with
other jobs at stop 25, about 6 when idle at stop 21; almost all of it RISE)::

  python experiments/fex_vs_rise.py --run-dir runs/demo --num-images 128 \\
      --out fex_vs_rise.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from fastxai_jax.configs import benchmarks  # noqa: E402
from fastxai_jax.data.groundtruth import CLASS_NAMES, EVAL_SEED, make_benchmark  # noqa: E402
from fastxai_jax.evaluation import evaluate_methods  # noqa: E402
from fastxai_jax.explainers.learned import runs  # noqa: E402
from fastxai_jax.metrics import paired_difference  # noqa: E402
from fastxai_jax.models import make_apply_fn  # noqa: E402

METRICS = ("deletion_auc", "patch_deletion_auc", "insertion_auc", "pointing_game")


def _load_target(target_dir: pathlib.Path):
    from fastxai_jax.train.target import load_target

    if not (target_dir / "params").exists():
        sys.exit(f"--run-dir: no trained target in {target_dir} (run `make demo` first)")
    module, variables, family = load_target(target_dir)  # with the options it was trained with
    return make_apply_fn(module, family), variables, family


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", default="runs/demo", help="holds target/ and fex/")
    parser.add_argument("--num-images", type=int, default=128)  # configs.benchmarks.fex_vs_rise
    parser.add_argument(
        "--data-seed",
        type=int,
        default=EVAL_SEED + 17,
        help="benchmark seed of the scored images (the demo scores EVAL_SEED)",
    )
    parser.add_argument("--rise-masks", type=int, default=4000)
    parser.add_argument("--out", default="fex_vs_rise.json")
    args = parser.parse_args(argv)
    if args.num_images < 2:
        parser.error("--num-images must be at least 2")

    run = pathlib.Path(args.run_dir)
    apply_fn, variables, family = _load_target(run / "target")
    if not (run / "fex" / "explainer").exists():
        sys.exit(f"--run-dir: no trained FEX in {run / 'fex'} (run `make demo` first)")
    trained = runs.load(run / "fex", method="fex")
    explain = trained.explain
    data = make_benchmark(args.num_images, seed=args.data_seed)
    config = benchmarks.fex_vs_rise(family)
    summary, _ = evaluate_methods(
        apply_fn,
        variables,
        data["images"],
        data["masks"],
        config["methods"],
        key=jax.random.key(0),
        protocol=config["protocol"],
        explainers={"fex": lambda x, t: explain(x, t)},
        method_options={"rise": {"num_masks": args.rise_masks}},
    )
    per_input = {
        m: {k: np.asarray(v) for k, v in r["per_input"].items()} for m, r in summary.items()
    }
    result: dict = {"num_images": args.num_images, "data_seed": args.data_seed, "metrics": {}}
    for metric in METRICS:
        fex_v, rise_v = per_input["fex"][metric], per_input["rise"][metric]
        diff = paired_difference(fex_v, rise_v)
        result["metrics"][metric] = {
            "fex": float(fex_v.mean()),
            "rise": float(rise_v.mean()),
            "random": float(per_input["random"][metric].mean()),
            "fex_minus_rise": diff.format(),
            "median_fex_minus_rise": float(np.median(fex_v - rise_v)),
        }
        print(f"{metric}: {result['metrics'][metric]}", flush=True)

    # The deletion gap by explained class, next to the all-black probability.
    images = jnp.asarray(data["images"])
    explained = np.asarray(jnp.argmax(apply_fn(variables, images), -1))
    black = jax.nn.softmax(apply_fn(variables, jnp.zeros_like(images[:1])), -1)[0]
    gap = per_input["fex"]["deletion_auc"] - per_input["rise"]["deletion_auc"]
    result["deletion_by_class"] = {}
    for k, name in enumerate(CLASS_NAMES):
        rows = explained == k
        if rows.any():
            result["deletion_by_class"][name] = {
                "n": int(rows.sum()),
                "fex_minus_rise": float(gap[rows].mean()),
                "black_image_probability": float(black[k]),
            }
            print(name, result["deletion_by_class"][name])
    pathlib.Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
