"""DAX, LTX, TVE and FastSHAP on the embedded benchmark against its ground truth (slow).

Each run trains on the planted-object benchmark (2048 training images, the 32
test images) with the recipes of ``experiments/benchmarks/bench_learned.py`` and
must decrease its loss and beat a random map on deletion AUC (lower is better)
and the pointing game (~12 min on 2 CPU cores without DAX). The
target small CNN is loaded from ``$FASTXAI_TARGET_DIR`` (trained there with
``steps=$FASTXAI_TARGET_STEPS``, default 600, if missing).

  FASTXAI_TARGET_DIR=/tmp/target pytest -m slow tests/explainers/test_learned_benchmark.py
"""

import argparse
import importlib.util
import os
import pathlib

import jax
import jax.numpy as jnp
import pytest

from fastxai_jax.data.groundtruth import make_benchmark
from fastxai_jax.models import make_apply_fn

pytestmark = pytest.mark.slow

_BENCH = pathlib.Path(__file__).resolve().parents[2] / "experiments/benchmarks/bench_learned.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_learned", _BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    workdir = os.environ.get("FASTXAI_TARGET_DIR") or str(tmp_path_factory.mktemp("target"))
    steps = int(os.environ.get("FASTXAI_TARGET_STEPS", "600"))
    bench = _bench()
    module, variables, family = bench.load_target(workdir, steps)
    apply_fn = make_apply_fn(module, family)
    train = make_benchmark(2048, seed=101, image_size=64)
    test = make_benchmark(32, seed=202, image_size=64)
    x = jnp.asarray(test["images"])
    masks = jnp.asarray(test["masks"])
    target = jnp.argmax(apply_fn(variables, x), axis=-1).astype(jnp.int32)
    args = argparse.Namespace(
        steps=300, ltx_lam=2.0, dax_samples=256, dax_epochs=6, dax_complement="frozen",
        dax_fill=0.0,
        test_labels=test["labels"],
        backbone="target", tve_head_init="local", tve_cells=1, tve_steps=1000, tve_lr=3e-3,
        fastshap_steps=900, fastshap_lr=3e-3, fastshap_fill=-1.0, snapshot_every=300,
    )  # fmt: skip
    random_map = jax.random.uniform(jax.random.key(123), masks.shape)
    random_q = bench.quality(apply_fn, variables, x, random_map, masks, target)
    return dict(
        module=module, variables=variables, family=family, apply_fn=apply_fn, train=train,
        x=x, masks=masks, target=target, bench=bench, args=args, random=random_q,
        random_map=random_map,
    )  # fmt: skip


def _beats_random(quality, random_quality) -> bool:
    return (
        quality["deletion_auc"] < random_quality["deletion_auc"]
        and quality["pointing_game"] > random_quality["pointing_game"]
    )


def _loss_decreased(history) -> bool:
    losses = [h["loss"] for h in history]
    return sum(losses[-10:]) / 10 < sum(losses[:10]) / 10


@pytest.mark.xfail(
    reason="DAX at this test's budget (256 samples × 6 epochs) is not verified to beat the "
    "random map; the bench recipe (1000 × 9, ~90 s per image) does on the 32 images (README)",
    strict=False,
)
def test_dax_on_benchmark(setup):
    s = setup
    maps, *_ = s["bench"].run_dax(s["apply_fn"], s["variables"], s["x"], s["target"], s["args"])
    q = s["bench"].quality(s["apply_fn"], s["variables"], s["x"], maps, s["masks"], s["target"])
    assert _beats_random(q, s["random"]), (q, s["random"])


def test_ltx_on_benchmark(setup):
    s = setup
    out = s["bench"].run_ltx(
        s["module"], s["variables"], s["apply_fn"], s["train"]["images"], s["x"], s["args"]
    )
    for stage in ("stage_a", "stage_b"):
        maps, _, _, _, history = out[stage]
        assert _loss_decreased(history)
        q = s["bench"].quality(s["apply_fn"], s["variables"], s["x"], maps, s["masks"], s["target"])
        assert _beats_random(q, s["random"]), (q, s["random"])


def test_tve_transfers_to_unseen_heads(setup):
    s = setup
    out = s["bench"].run_tve(
        s["module"], s["variables"], s["family"], s["train"]["images"], s["train"]["labels"],
        s["x"], s["args"],
    )  # fmt: skip
    # the shape-only head is reported, not asserted: on it even the oracle map (the
    # encoder's own cell embeddings) only ties the pixel-level random map on deletion.
    for name in ("target_head", "colour_only_head"):
        maps, _, _, _, history, head_apply, head_target, _, _ = out[name]
        assert _loss_decreased(history)
        q = s["bench"].quality(head_apply, s["variables"], s["x"], maps, s["masks"], head_target)
        rq = s["bench"].quality(
            head_apply, s["variables"], s["x"], s["random_map"], s["masks"], head_target
        )
        assert _beats_random(q, rq), (q, rq)


def test_fastshap_on_benchmark(setup):
    s = setup
    maps, _, _, _, history, _, _ = s["bench"].run_fastshap(
        s["module"],
        s["apply_fn"],
        s["variables"],
        s["family"],
        s["train"]["images"],
        s["x"],
        s["args"],
    )
    assert _loss_decreased(history)
    q = s["bench"].quality(s["apply_fn"], s["variables"], s["x"], maps, s["masks"], s["target"])
    assert _beats_random(q, s["random"]), (q, s["random"])
