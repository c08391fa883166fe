"""sweep.run in-process: bad configs fail before compute; resume skips; corrupt shards rerun."""

import json

import numpy as np
import pytest
from _sweep_helpers import tiny_config

from fastxai_jax import sweep
from fastxai_jax.sweep import store


@pytest.mark.parametrize(
    "change,field",
    [
        ({"models": [{"name": "resnet7", "weights": "random:0"}]}, "models[0].name"),
        ({"methods": [{"name": "saliency"}, {"name": "magic"}]}, "methods[1].name"),
        ({"metrics": [{"name": "auroc"}]}, "metrics[0].name"),
        ({"metrics": [{"name": "iou", "options": {"treshold": 0.2}}]},
         "metrics[0].options.treshold"),
        ({"data": {"source": "tfds", "name": "cifar10", "split": "test", "subset_seed": "42"}},
         "data.subset_seed"),
        ({"data": {"source": "groundtruth", "split": "validation", "num_images": 4}}, "data.split"),
        ({"data": {"source": "tfds", "name": "cifar10", "split": "nope", "data_dir": "/none"}},
         "data.split"),
        ({"data": {"source": "hdf5"}}, "data.source"),
        ({"shard_size": 6}, "shard_size"),  # 8 devices (conftest) do not divide a shard of 6
    ],
)  # fmt: skip
def test_bad_config_names_the_field_before_compute(tmp_path, no_compute, change, field):
    with pytest.raises(ValueError, match=f"field {field.replace('[', '.').replace(']', '.')}"):
        sweep.run(tiny_config(tmp_path / "out", **change), progress=False)
    assert not (tmp_path / "out" / "cells").exists()


def test_output_dir_of_another_sweep_is_refused(tmp_path, no_compute):
    out = tmp_path / "out"
    config = tiny_config(out)
    store.claim_output_dir(out, config, sweep.config_hash(sweep.validate_config(config)), 10)
    other = tiny_config(out, methods=[{"name": "saliency"}])
    with pytest.raises(ValueError, match="field output_dir: .* different sweep"):
        sweep.run(other, progress=False)


def test_resume_skips_finished_shards_and_recomputes_a_truncated_one(tmp_path):
    out = tmp_path / "out"
    config = tiny_config(out, shard_size=8, methods=[{"name": "saliency"}])
    first = sweep.run(config, progress=False)
    assert (first["computed"], first["skipped"]) == (2, 0)
    csv_before = (out / "results.csv").read_text()
    rows = first["table"]["rows"]
    assert [r["index"] for r in rows] == list(range(10))  # padding rows are dropped
    assert np.load(store.shard_paths(out, "cnn", "saliency", 1)[0]).shape == (2, 24, 24)
    again = sweep.run(config, progress=False)
    assert (again["computed"], again["skipped"]) == (0, 2)
    npy = store.shard_paths(out, "cnn", "saliency", 1)[0]
    npy.write_bytes(npy.read_bytes()[:-7])  # truncated in place
    with pytest.raises(ValueError, match="corrupt"):
        sweep.merge(out)  # never merged
    third = sweep.run(config, progress=False)
    assert (third["computed"], third["skipped"]) == (1, 1)
    assert (out / "results.csv").read_text() == csv_before
    log = [(e["shard"]) for e in store.computed_log(out)]
    assert sorted(log) == [0, 1, 1]
    # Same size, other bytes: a score file is caught by its hash at resume; an
    # attribution file by the full check of merge(verify_attributions=True).
    jsonl = store.shard_paths(out, "cnn", "saliency", 0)[1]
    original = jsonl.read_bytes()
    jsonl.write_bytes(original.replace(b'"index": 3', b'"index": 4'))
    assert not store.shard_is_done(out, "cnn", "saliency", 0)
    jsonl.write_bytes(original)
    npy.write_bytes(npy.read_bytes()[:-4] + b"\0\0\0\0")
    assert store.shard_is_done(out, "cnn", "saliency", 1)
    with pytest.raises(ValueError, match="shard 1 of cnn/saliency is missing or corrupt"):
        sweep.merge(out, verify_attributions=True)
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary[0]["num_images"] == 10
    means = np.mean([r["insertion_auc"] for r in rows])
    assert summary[0]["insertion_auc"]["mean"] == pytest.approx(means)
    assert (out / "plot_insertion_auc.png").stat().st_size > 1000


def test_shipped_config_loads_and_validates():
    config = sweep.validate_config(sweep.load_config("sweep_groundtruth"))
    assert [m["name"] for m in config["methods"]] == ["saliency", "ig", "mfaba", "rise"]
    assert config["models"][0]["weights"] == "random:0"
    trained = sweep.load_config("sweep_groundtruth:runs/demo/target")
    assert trained["models"][0]["weights"] == "target:runs/demo/target"
    assert sweep.config_hash(config) != sweep.config_hash(sweep.validate_config(trained))
    moved = {**config, "output_dir": "elsewhere"}
    assert sweep.config_hash(moved) == sweep.config_hash(config)  # the hash ignores output_dir
