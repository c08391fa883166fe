"""The benchmark target: tiny end-to-end run, reload, config checks, CLI; full run is slow."""

import json

import jax
import numpy as np
import pytest

from fastxai_jax.cli import main
from fastxai_jax.data.groundtruth import NUM_CLASSES, make_benchmark
from fastxai_jax.models import make_apply_fn
from fastxai_jax.train.target import load_or_train_target, train_target

TINY = {"num_train": 48, "num_test": 16, "steps": 4, "batch_size": 16}


def test_tiny_run_saves_and_reloads(tmp_path):
    module, variables, family, metrics = train_target(tmp_path, progress=False, **TINY)
    assert family == "half"
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"] and saved["config"]["steps"] == 4
    log = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [0, 1, 2, 3]

    # Loading returns the same weights without training again.
    module2, loaded, family2, metrics2 = load_or_train_target(
        tmp_path, progress=False, return_metrics=True, **TINY
    )
    assert family2 == family and metrics2["test_accuracy"] == metrics["test_accuracy"]
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(log) == len((tmp_path / "train_log.jsonl").read_text().splitlines())
    apply_fn = make_apply_fn(module2, family2)
    x = make_benchmark(2, seed=5)["images"]
    assert apply_fn(loaded, x).shape == (2, NUM_CLASSES)

    with pytest.raises(ValueError, match="not the requested"):
        load_or_train_target(tmp_path, progress=False, **{**TINY, "lr": 0.5})
    with pytest.raises(ValueError, match="unknown option"):
        load_or_train_target(tmp_path, progress=False, width=3)


def test_cli_train_target(tmp_path, capsys):
    argv = [
        "train-target",
        "--workdir",
        str(tmp_path),
        "--steps",
        "2",
        "--num-train",
        "32",
        "--num-test",
        "16",
        "--batch-size",
        "16",
        "--no-progress",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "test accuracy:" in out
    assert json.loads(out.strip().splitlines()[-1])["workdir"] == str(tmp_path)
    assert main(argv[:-1] + ["--seed", "1", "--no-progress"]) == 2  # other config, same workdir
    assert "not the requested" in capsys.readouterr().err


@pytest.mark.slow
def test_default_target_reaches_95_percent(tmp_path):
    _, _, _, metrics = train_target(tmp_path, progress=False)
    print(metrics)
    assert metrics["test_accuracy"] >= 0.95


def test_null_augment_blacks_out_the_object_and_labels_uniform(key):
    import jax.numpy as jnp

    from fastxai_jax.train.target import null_augment

    data = make_benchmark(6, seed=3)
    images, masks = jnp.asarray(data["images"]), jnp.asarray(data["masks"])
    labels = jnp.asarray(data["labels"])
    out, soft = null_augment(key, images, masks, labels, 1.0, max_cell_share=0.0)
    # Every object pixel and its one-pixel ring is black; everything else is kept.
    ring = np.zeros_like(np.asarray(masks))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = np.roll(np.asarray(masks), (dy, dx), axis=(1, 2))
            ring |= shifted
    np.testing.assert_array_equal(np.asarray(out)[ring], 0.0)
    np.testing.assert_array_equal(np.asarray(out)[~ring], np.asarray(images)[~ring])
    np.testing.assert_allclose(np.asarray(soft), 1.0 / NUM_CLASSES)

    kept, hard = null_augment(key, images, masks, labels, 0.0)
    np.testing.assert_array_equal(np.asarray(kept), np.asarray(images))
    np.testing.assert_array_equal(np.asarray(hard), np.eye(NUM_CLASSES)[data["labels"]])

    # Cells only: the black share per image is within [0, max_cell_share].
    none = jnp.zeros_like(masks)
    cells, _ = null_augment(key, images + 0.01, none, labels, 1.0, max_cell_share=0.6)
    black = np.asarray(jnp.all(cells == 0, axis=-1)).mean(axis=(1, 2))
    assert np.all(black <= 0.6 + 1e-6) and black.max() > 0
    with pytest.raises(ValueError, match="multiples of cell"):
        null_augment(key, images[:, :60, :60], masks[:, :60, :60], labels, 0.5)


def test_null_fraction_is_an_opt_in_config_entry(tmp_path):
    from fastxai_jax.train.target import _config

    assert "null_fraction" not in _config(0)
    assert "null_fraction" not in _config(0, null_fraction=0.0)
    assert _config(0, null_fraction=0.25)["null_fraction"] == 0.25
    with pytest.raises(ValueError, match="null_fraction"):
        _config(0, null_fraction=1.0)
    _, variables, _, _ = train_target(tmp_path, progress=False, null_fraction=0.5, **TINY)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["config"]["null_fraction"] == 0.5
    with pytest.raises(ValueError, match="not the requested"):
        load_or_train_target(tmp_path, progress=False, **TINY)
    # load_target reads the options back from the saved config.
    from fastxai_jax.train.target import load_target

    _, loaded, _ = load_target(tmp_path)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileNotFoundError, match="no trained target"):
        load_target(tmp_path / "missing")


def test_demo_refuses_a_cache_trained_for_another_target(tmp_path):
    """The demo's learned explainers must not be reused against a different target."""
    from fastxai_jax.cli.demo import _check_cache
    from fastxai_jax.configs.demo import TARGET_OPTIONS

    _check_cache(tmp_path)  # nothing cached yet
    (tmp_path / "target").mkdir()
    saved = tmp_path / "target" / "metrics.json"
    saved.write_text(json.dumps({"config": {"steps": 2000}}))
    with pytest.raises(ValueError, match="earlier demo target"):  # exit 2 via cli.main
        _check_cache(tmp_path)
    saved.write_text(json.dumps({"config": {"steps": 2000, **TARGET_OPTIONS}}))
    _check_cache(tmp_path)
