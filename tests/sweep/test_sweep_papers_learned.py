"""The LTX and TVE papers' smoke sweeps with their learned method (``smoke:WORKDIR``):
a tiny explainer trained by runs.fit for 2 steps, the sweep's rows == the
trained explainer's maps scored by direct library calls."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _sweep_helpers import REPO, tiny_cnn

import fastxai_jax as fx
from fastxai_jax.data.groundtruth import EVAL_SEED, make_benchmark
from fastxai_jax.explainers import registry
from fastxai_jax.explainers.learned import ltx, runs, tve
from fastxai_jax.metrics import localisation

SIZE = 32
CONFIGS = {"ltx": "sweep_pos_neg_segmentation.py", "tve": "sweep_transfer.py"}


def _train(method, workdir):
    images = jnp.asarray(make_benchmark(8, seed=1, image_size=SIZE)["images"])
    apply_fn, variables, module = tiny_cnn(images)
    if method == "ltx":
        config = ltx.LtxConfig(kind="cnn", family="half", lam=1.0, finetune_steps=1)
    else:
        config = tve.TveConfig(
            embed_dim=8, image_size=SIZE, grid=4, patch_size=8, hidden_size=16, depth=1,
            num_heads=2, mlp_dim=32, head_hidden=16, explainer_family="half",
            encoder_family="half",
        )  # fmt: skip
    learned = registry.make_learned(method, config, apply_fn, variables, module=module)
    runs.fit(
        method, learned, optax.adam(1e-3), lambda step: {"images": images[:4]},
        sample_batch={"images": images[:4]}, num_steps=2, key=jax.random.key(0),
        workdir=workdir, progress=False,
    )  # fmt: skip


def _run(method, tmp_path):
    workdir = tmp_path / f"{method}_run"
    _train(method, workdir)
    path = REPO / "experiments" / method / CONFIGS[method]
    config = fx.sweep.load_config(f"{path}:smoke:{workdir}")
    assert config["methods"][0] == {"name": method, "explainer": str(workdir)}
    config["output_dir"] = str(tmp_path / "out")
    return config, fx.sweep.run(config, progress=False)["table"], workdir


@pytest.mark.slow  # ~105 s on 2 shared cores: trains a tiny LTX, then the smoke sweep (3 methods)
def test_ltx_smoke_with_learned_ltx_equals_library_calls(tmp_path):
    config, table, workdir = _run("ltx", tmp_path)
    bench = make_benchmark(8, seed=EVAL_SEED, image_size=SIZE)
    images, masks = jnp.asarray(bench["images"]), bench["masks"]
    apply_fn, variables, module = tiny_cnn(images)
    trained = runs.load(workdir, apply_fn=apply_fn, target_params=variables, module=module)
    maps = trained.explain(images)  # LTX explains its own choice of class
    target = np.asarray(jnp.argmax(apply_fn(variables, images), axis=-1))
    rows = [r for r in table["rows"] if r["method"] == "ltx"]
    assert [r["target"] for r in rows] == target.tolist()
    curves = fx.metrics.pos_neg_perturbation(apply_fn, variables, images, maps, target,
                                              **config["metrics"][0]["options"])  # fmt: skip
    np.testing.assert_allclose([r["pos_auc"] for r in rows], curves["pos"].auc, atol=1e-4)
    np.testing.assert_allclose([r["neg_auc"] for r in rows], curves["neg"].auc, atol=1e-4)
    seg = localisation.segmentation_scores(maps, masks, ap_classes="both")
    np.testing.assert_allclose([r["miou"] for r in rows], seg.miou, atol=1e-5)
    assert np.asarray(maps).std() > 0


@pytest.mark.slow  # ~95 s on 2 shared cores: trains a tiny TVE, then the smoke sweep on two heads
def test_tve_smoke_with_learned_tve_on_two_heads(tmp_path):
    config, table, workdir = _run("tve", tmp_path)
    images = jnp.asarray(make_benchmark(8, seed=EVAL_SEED, image_size=SIZE)["images"])
    options = config["metrics"][0]["options"]
    maps_per_head = []
    for seed, model in enumerate(config["models"]):
        apply_fn, variables, module = tiny_cnn(images, seed)
        trained = runs.load(workdir, apply_fn=apply_fn, target_params=variables, module=module)
        target = np.asarray(jnp.argmax(apply_fn(variables, images), axis=-1))
        maps = trained.explain(images, target)
        curves = fx.insertion_deletion(apply_fn, variables, images, maps, target, **options)
        rows = [r for r in table["rows"] if (r["model"], r["method"]) == (model["label"], "tve")]
        assert [r["target"] for r in rows] == target.tolist()
        np.testing.assert_allclose([r["insertion_auc"] for r in rows], curves["insertion"].auc,
                                   atol=1e-5)  # fmt: skip
        np.testing.assert_allclose([r["deletion_auc"] for r in rows], curves["deletion"].auc,
                                   atol=1e-5)  # fmt: skip
        maps_per_head.append(np.asarray(maps))
    assert np.abs(maps_per_head[0] - maps_per_head[1]).max() > 1e-6  # each head its own maps
