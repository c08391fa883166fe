"""``fastxai`` verbs after issue 20 (part 2): saved target options, separate seeds,
per-image RISE keys and ``explain --list``."""

from __future__ import annotations

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fastxai_jax as fx
from fastxai_jax.cli import main
from fastxai_jax.data.groundtruth import EVAL_SEED, NUM_CLASSES, make_benchmark
from fastxai_jax.explainers import registry, rise
from fastxai_jax.train import target as target_lib
from fastxai_jax.train.checkpoint import save_params

SIZE = 64


@pytest.fixture(scope="module")
def odd_target(tmp_path_factory):
    """A workdir holding a small_cnn 'trained' with non-default options (the demo's
    null_fraction, 2 steps) and seed 7: random weights saved as train_target saves."""
    workdir = tmp_path_factory.mktemp("odd_target")
    module, family = fx.models.build("small_cnn", num_classes=NUM_CLASSES)
    sample = jnp.zeros((1, SIZE, SIZE, 3), jnp.float32)
    variables = module.init(jax.random.key(3), sample)
    config = target_lib._config(7, steps=2, null_fraction=0.25)
    saved = {"config": config, "metrics": {}, "num_classes": NUM_CLASSES, "family": family}
    save_params(workdir / "params", variables, saved)
    return workdir, module, family, variables


def _run(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr()


def test_explain_loads_the_options_the_target_was_saved_with(odd_target, tmp_path, capsys):
    """Was: "holds a target trained with config ..., not the requested ..." for any
    target trained with non-default options (the README demo's included)."""
    workdir, module, family, variables = odd_target
    argv = ["explain", "--method", "saliency", "--dataset", "groundtruth", "--num", "2"]
    argv += ["--workdir", str(workdir), "--out", str(tmp_path / "o"), "--no-png", "--seed", "3"]
    code, captured = _run(argv, capsys)
    assert code == 0, captured.err
    images = make_benchmark(2, seed=EVAL_SEED + 3, image_size=SIZE)["images"]
    apply_fn = fx.models.make_apply_fn(module, family)
    expected = registry.attribute("saliency", apply_fn, variables, jnp.asarray(images))
    np.testing.assert_allclose(np.load(tmp_path / "o" / "attributions.npy"), expected, rtol=1e-6)


def test_a_target_seed_other_than_the_saved_one_is_refused(odd_target, tmp_path, capsys):
    workdir = odd_target[0]
    argv = ["explain", "--method", "saliency", "--dataset", "groundtruth", "--num", "2"]
    argv += ["--workdir", str(workdir), "--out", str(tmp_path / "o"), "--target-seed", "0"]
    code, captured = _run(argv, capsys)
    assert code == 2
    assert "--target-seed 0" in captured.err and "seed 7" in captured.err, captured.err


def test_evaluate_seed_leaves_the_target_alone(odd_target, tmp_path, capsys):
    """``evaluate --seed 3`` scores new images against the saved (seed 7) target; it
    used to ask for a target trained with seed 3 and refuse this one."""
    workdir = odd_target[0]
    argv = ["evaluate", "--methods", "random", "--num", "2", "--batch-size", "2", "--seed", "3"]
    argv += ["--num-steps", "4", "--workdir", str(workdir), "--out", str(tmp_path / "e")]
    code, captured = _run([*argv, "--no-progress"], capsys)
    assert code == 0, captured.err
    config = json.loads((tmp_path / "e" / "results.json").read_text())["config"]
    assert config["seed"] == 3 and config["target_seed"] == 7


def test_demo_seed_and_target_seed_are_separate(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_target(workdir, *, seed, **kwargs):
        seen["seed"] = seed
        raise ValueError("stop after the target")

    monkeypatch.setattr(target_lib, "load_or_train_target", fake_target)
    argv = ["demo", "--out", str(tmp_path / "o"), "--workdir", str(tmp_path / "w"), "--seed", "3"]
    assert main([*argv, "--no-progress"]) == 2
    assert seen["seed"] == 0  # was 3: --seed retrained the target
    assert main([*argv, "--no-progress", "--target-seed", "5"]) == 2
    assert seen["seed"] == 5
    assert "stop after the target" in capsys.readouterr().err


def _explain_rise(tmp_path, batch_size):
    out = tmp_path / f"rise_{batch_size}"
    argv = ["explain", "--method", "rise", "--model", "small_cnn", "--untrained"]
    argv += ["--dataset", "groundtruth", "--num", "4", "--image-size", "24", "--no-png"]
    argv += ["--option", "num_masks=32", "--option", "grid_size=4", "--option", "chunk_size=16"]
    argv += ["--batch-size", str(batch_size), "--out", str(out)]
    assert main(argv) == 0
    return np.load(out / "attributions.npy")


@pytest.mark.slow  # RISE compiles per batch shape: ~60 s on 2 shared cores
def test_explain_rise_maps_do_not_depend_on_batch_size(tmp_path):
    """Keys per image index (was: per batch, 11% relative change with --batch-size)."""
    by_one, by_four = _explain_rise(tmp_path, 1), _explain_rise(tmp_path, 4)
    assert by_four.shape == (4, 24, 24) and np.ptp(by_four) > 0
    np.testing.assert_allclose(by_one, by_four, rtol=1e-5, atol=1e-7)


def _no_scores(apply_fn, params, x, attribution, masks, protocol):
    """``score_batch`` stand-in: the maps are what this test compares (scoring is slow)."""
    curve = types.SimpleNamespace(curve=np.zeros((x.shape[0], 2)), fractions=np.zeros(2))
    curves = {name: curve for name in ("insertion", "deletion", "pos", "neg")}
    return {"scores": {"none": np.zeros(x.shape[0])}, "curves": curves}


@pytest.mark.slow  # ~50 s on 2 shared cores (compiles)
def test_evaluate_rise_maps_do_not_depend_on_batch_size(monkeypatch):
    from fastxai_jax.evaluation import run

    monkeypatch.setattr(run, "score_batch", _no_scores)
    params = {"w": jax.random.normal(jax.random.key(0), (8 * 8 * 3, 3)) * 0.3}

    def apply_fn(p, x):
        return x.reshape(x.shape[0], -1) @ p["w"]

    images = jax.random.uniform(jax.random.key(1), (4, 8, 8, 3))
    masks = np.zeros((4, 8, 8), bool)
    masks[:, 2:5, 2:5] = True
    options = {"rise": {"num_masks": 16, "grid_size": 2, "chunk_size": 8}}
    maps = {}
    for batch_size in (1, 4):
        _, _, maps[batch_size] = fx.evaluation.evaluate_methods(
            apply_fn, params, images, masks, ["rise"], key=jax.random.key(2),
            batch_size=batch_size, method_options=options, progress=False, return_maps=True,
        )  # fmt: skip
    np.testing.assert_allclose(maps[1]["rise"], maps[4]["rise"], rtol=1e-5, atol=1e-7)
    # the per-image keys are those of rise.image_keys: image i's masks come from fold_in(k, i)
    key = jax.random.fold_in(jax.random.key(2), 0)
    one = rise.rise(
        apply_fn, params, images[2:3], jnp.argmax(apply_fn(params, images[2:3]), -1),
        key=jax.random.fold_in(key, 2)[None], **options["rise"],
    )  # fmt: skip
    np.testing.assert_allclose(maps[4]["rise"][2], one[0], rtol=1e-5, atol=1e-7)


def test_explain_list_prints_every_method_with_kind_and_cost(capsys):
    assert main(["explain", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == fx.available_methods()
    table = {line.split()[0]: line for line in lines}
    assert "per-input  1 forward, 1 backward" in table["saliency"]
    assert "stochastic 4000 forward, 0 backward" in table["rise"]
    assert "learned" in table["fex"]


def test_base_options_of_a_noise_tunnel_are_checked_too():
    with pytest.raises(ValueError, match="num_step"):
        registry.check_option_names("smoothgrad", {"base": "ig", "base_options": {"num_step": 3}})
    registry.check_option_names("smoothgrad", {"base": "ig", "base_options": {"num_steps": 3}})
    registry.check_option_names("gradcam", {"layer": "x", "relu": False})
    registry.check_option_names("dax", {"num_samples": 8, "patch_size": 4})
    with pytest.raises(ValueError, match="'relus'"):
        registry.check_option_names("gradcam", {"relus": False})
