"""The evaluation harness before and after a refactor gives the same numbers.

Runs the demo's protocol (RISE pixel curves + the FEX paper's patch curves) and
per-input methods on a few benchmark images with two source trees, each in its
own process, and compares every per-image score, every mean curve and the
declared target passes. The target is a small CNN at a fixed random
initialisation, so that nothing has to be trained. A tree whose harness is
``fastxai_jax.cli.evaluate.evaluate_methods`` (with a protocol dict) and one
whose harness is ``fastxai_jax.evaluation`` are both understood.

Command (about 1 minute on 2 CPU cores)::

  git worktree add --detach /tmp/old_tree <old commit>
  python experiments/eval_equivalence.py --old /tmp/old_tree --new .

The child process drops the editable install's import finder and asserts that
``fastxai_jax`` comes from the tree on ``PYTHONPATH``: with that finder in
place, a module the old tree lacks (``fastxai_jax.evaluation``) was silently
imported from the installed new tree, and an earlier run of this script
wrongly reported identical scores.

Measured (086ffc3, before the redesign of issue 17, vs this tree; 8 images,
RISE-200, MFABA, IG-8, Saliency, random and a stand-in learned map):
- this tree with 086ffc3's ``data/groundtruth.py`` (the images built with the
  old ``einsum``): MFABA, Saliency, random and the stand-in bit for bit; IG
  within 6.2e-5 per image (its loop's float order);
- this tree as is (images built element-wise, < 4e-7 apart): largest per-image
  gap Saliency and random 1.5e-8, the stand-in 9.5e-7, IG 3.0e-5, MFABA 2.6e-3
  (IoU; its sign steps amplify the image change; deletion 2.2e-4); every mean
  but RISE's equal to the third decimal;
- RISE differs in both (deletion 0.1744 vs 0.1733, ADP 0.122 vs 0) because
  issue 20 gave each image its own masks.
The stand-in's declared passes read 0/0 before and −1/−1 ("not declared") now.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

_CHILD = r"""
import json, os, sys
# An editable install's finder would resolve modules the tree lacks from the
# installed tree, mixing the two: only the tree on PYTHONPATH may be imported.
sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, "__name__", "") != "_EditableFinder"]
import fastxai_jax
tree = os.path.realpath(os.environ["PYTHONPATH"])
assert os.path.realpath(fastxai_jax.__file__).startswith(tree), (fastxai_jax.__file__, tree)
import jax, jax.numpy as jnp, numpy as np
from fastxai_jax.data.groundtruth import EVAL_SEED, NUM_CLASSES, make_benchmark
from fastxai_jax.models import build, make_apply_fn

num, masks_rise, methods, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
module, family = build("small_cnn", num_classes=NUM_CLASSES)
data = make_benchmark(num, seed=EVAL_SEED)
x = jnp.asarray(data["images"])
variables = module.init(jax.random.key(3), x[:1], train=False)
apply_fn = make_apply_fn(module, family)
options = {"rise": {"num_masks": masks_rise}, "ig": {"num_steps": 8}}
# A learned explainer stands in as a fixed function of the image (no target query).
explainers = {"toy": lambda z, t: jnp.sum(z, axis=-1) * (1.0 + t[:, None, None])}
kwargs = dict(key=jax.random.key(0), batch_size=4, method_options=options,
              explainers=explainers, progress=False)
try:
    from fastxai_jax.evaluation import evaluate_methods
    from fastxai_jax.configs.demo import protocol
    summary, curves = evaluate_methods(apply_fn, variables, data["images"], data["masks"],
                                       methods.split(","), protocol=protocol(family), **kwargs)
except ImportError:
    from fastxai_jax.cli.evaluate import default_protocol, evaluate_methods
    proto = {**default_protocol(), "normalisation": family,
             "patch_protocol": {"patch_size": 8, "num_steps": 10,
                                "substrate": "zeros_normalised"}}
    summary, curves = evaluate_methods(apply_fn, variables, data["images"], data["masks"],
                                       methods.split(","), protocol=proto, **kwargs)
keep = {m: {"per_input": r["per_input"], "forward_passes": r["forward_passes"],
            "backward_passes": r["backward_passes"]} for m, r in summary.items()}
json.dump({"summary": keep, "curves": curves}, open(out, "w"))
"""


def _run(tree: pathlib.Path, args, out: pathlib.Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve()), "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-c", _CHILD, str(args.num), str(args.rise_masks), args.methods]
    subprocess.run([*command, str(out)], check=True, env=env, cwd=tempfile.gettempdir())
    return json.loads(out.read_text())


def compare(old: dict, new: dict, atol: float) -> list[str]:
    """Differences between two runs (empty when they agree to ``atol``)."""
    problems = []
    for method, row in old["summary"].items():
        if method not in new["summary"]:
            problems.append(f"{method}: missing")
            continue
        for metric, values in row["per_input"].items():
            other = new["summary"][method]["per_input"].get(metric)
            if other is None:
                problems.append(f"{method}.{metric}: missing")
                continue
            gap = float(np.max(np.abs(np.subtract(values, other))))
            if gap > atol:
                same3 = round(float(np.mean(values)), 3) == round(float(np.mean(other)), 3)
                problems.append(
                    f"{method}.{metric}: max |per-image difference| {gap:.2e}; mean "
                    f"{np.mean(values):.6f} vs {np.mean(other):.6f} "
                    f"({'same' if same3 else 'DIFFERENT'} to the third decimal)"
                )
        for name, curve in old["curves"][method].items():
            gap = float(
                np.max(np.abs(np.subtract(curve["mean"], new["curves"][method][name]["mean"])))
            )
            if gap > atol:
                problems.append(f"{method} {name} curve: max |difference| {gap:.2e}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", required=True, help="source tree before the change")
    parser.add_argument("--new", default=".", help="source tree after the change")
    parser.add_argument("--num", type=int, default=8)
    parser.add_argument("--rise-masks", type=int, default=200)
    parser.add_argument("--methods", default="rise,mfaba,ig,saliency,random")
    parser.add_argument("--atol", type=float, default=0.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        old = _run(pathlib.Path(args.old), args, pathlib.Path(tmp) / "old.json")
        new = _run(pathlib.Path(args.new), args, pathlib.Path(tmp) / "new.json")
    problems = compare(old, new, args.atol)
    for method, row in new["summary"].items():
        before = old["summary"].get(method, {})
        print(
            f"{method}: passes {before.get('forward_passes')}/{before.get('backward_passes')} "
            f"-> {row['forward_passes']}/{row['backward_passes']}; "
            f"mean deletion {np.mean(row['per_input']['deletion_auc']):.6f}"
        )
    print("\n".join(problems) if problems else "identical per-image scores and curves")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
