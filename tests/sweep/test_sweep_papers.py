"""The papers' sweep configs (experiments/<paper>/): protocols as stated, bad args refused,
and each offline smoke variant's merged table == direct library calls on the same images."""

import pathlib

import numpy as np
import pytest
from _sweep_helpers import REPO

import fastxai_jax as fx
from fastxai_jax.data.groundtruth import EVAL_SEED, make_benchmark
from fastxai_jax.metrics import localisation
from fastxai_jax.models import zoo
from fastxai_jax.sweep.sources import open_source

PAPERS = {
    "mfaba": ("sweep_insertion_deletion.py", ("full", "smoke")),
    "dax": ("sweep_voc_iou.py", ("full", "smoke")),
    "fex": ("sweep_patch_insertion_deletion.py", ("full", "smoke")),
    "ltx": ("sweep_pos_neg_segmentation.py", ("full", "segmentation", "smoke")),
    "tve": ("sweep_transfer.py", ("full", "cifar10", "smoke")),
}


def _path(paper: str) -> str:
    return str(REPO / "experiments" / paper / PAPERS[paper][0])


def _load(paper: str, arg: str) -> dict:
    return fx.sweep.validate_config(fx.sweep.load_config(f"{_path(paper)}:{arg}"))


@pytest.mark.parametrize("paper", sorted(PAPERS))
def test_configs_validate_and_one_path_moves_the_data(paper):
    for variant in PAPERS[paper][1]:
        config = _load(paper, variant)
        assert config["output_dir"].startswith("runs/")
    full = _load(paper, "full:/data/root")
    assert full["data"]["data_dir"] == "/data/root"
    for entry in full["models"] + [m for m in full["methods"] if "explainer" in m]:
        where = entry["explainer"] if "explainer" in entry else entry["weights"]
        assert pathlib.PurePath(where).parent == pathlib.PurePath("/data/root"), where
    with pytest.raises(ValueError, match="sweep config field arg: .*'nope'"):
        fx.sweep.load_config(f"{_path(paper)}:nope")


def test_protocols_are_the_papers():
    mfaba = _load("mfaba", "full")
    options = mfaba["metrics"][0]["options"]
    assert (options["insertion_substrate"], options["deletion_substrate"]) == ("zeros", "zeros")
    assert options["step_size"] == 224 and mfaba["data"]["num_images"] == 1000
    assert {"mfaba_sharp", "mfaba_smooth", "big", "agi", "ig", "saliency"} == {
        m["name"] for m in mfaba["methods"]
    }
    fex = _load("fex", "full")
    options = fex["metrics"][0]["options"]
    assert (options["granularity"], options["patch_size"], options["num_steps"]) == (
        "patch",
        16,
        10,
    )
    assert options["deletion_substrate"] == "zeros_normalised"
    assert (fex["data"]["num_images"], fex["data"]["subset_seed"]) == (1000, 42)
    assert fex["methods"][0]["name"] == "fex" and "explainer" in fex["methods"][0]
    dax = _load("dax", "full")
    assert dax["data"]["name"] == "voc/2007" and dax["metrics"][0] == {
        "name": "iou", "options": {"threshold": 0.2}}  # fmt: skip
    assert [m["name"] for m in _load("ltx", "full")["metrics"]] == ["pos_neg"]
    assert [m["name"] for m in _load("ltx", "segmentation")["metrics"]] == ["segmentation"]
    assert _load("tve", "full")["methods"][0]["name"] == "tve"


def _run_smoke(paper, tmp_path):
    config = fx.sweep.load_config(f"{_path(paper)}:smoke")
    config["output_dir"] = str(tmp_path / paper)
    table = fx.sweep.run(config, progress=False)["table"]
    return config, table


def _small_cnn(config, model, images):
    module, family = zoo.build("small_cnn", model["num_classes"], **model["options"])
    seed = int(model["weights"].split(":")[1])
    sample = zoo.normalise_images(images[:1], family)
    variables = zoo.random_variables(module, sample, seed=seed, train=False)
    return zoo.make_apply_fn(module, family), variables


def _lite0():
    module, variables = zoo.load_pretrained("efficientnet_lite0", None)
    return zoo.make_apply_fn(module, "imagenet"), variables


def _saliency_rows(table, model_label):
    return [r for r in table["rows"] if (r["model"], r["method"]) == (model_label, "saliency")]


def _cnn_smoke_saliency(paper, tmp_path):
    """A benchmark smoke sweep of ``paper`` and its small CNN's saliency by the library:
    ``(table, rows, (apply_fn, variables, images, masks), target, maps)``."""
    config, table = _run_smoke(paper, tmp_path)
    bench = make_benchmark(8, seed=EVAL_SEED, image_size=32)
    images, masks = bench["images"], bench["masks"]
    apply_fn, variables = _small_cnn(config, config["models"][0], images)
    target = np.asarray(np.argmax(apply_fn(variables, images), axis=-1))
    maps = fx.saliency(apply_fn, variables, images, target)
    return table, _saliency_rows(table, "cnn"), (apply_fn, variables, images, masks), target, maps


def test_ltx_smoke_equals_library_calls(tmp_path):
    table, rows, (apply_fn, variables, images, masks), target, maps = _cnn_smoke_saliency(
        "ltx", tmp_path
    )
    assert [r["target"] for r in rows] == target.tolist()
    curves = fx.metrics.pos_neg_perturbation(apply_fn, variables, images, maps, target)
    np.testing.assert_allclose([r["pos_auc"] for r in rows], curves["pos"].auc, atol=1e-4)
    np.testing.assert_allclose([r["neg_auc"] for r in rows], curves["neg"].auc, atol=1e-4)
    seg = localisation.segmentation_scores(maps, masks, ap_classes="both")
    np.testing.assert_allclose([r["miou"] for r in rows], seg.miou, atol=1e-5)
    np.testing.assert_allclose([r["average_precision"] for r in rows], seg.average_precision,
                               atol=1e-5)  # fmt: skip
    assert len(table["summary"]) == 2 and table["summary"][0]["num_images"] == 8


def test_tve_smoke_two_heads_equal_library_calls(tmp_path):
    config, table = _run_smoke("tve", tmp_path)
    images = make_benchmark(8, seed=EVAL_SEED, image_size=32)["images"]
    options = config["metrics"][0]["options"]
    aucs = []
    for model in config["models"]:
        apply_fn, variables = _small_cnn(config, model, images)
        target = np.asarray(np.argmax(apply_fn(variables, images), axis=-1))
        maps = fx.saliency(apply_fn, variables, images, target)
        curves = fx.insertion_deletion(apply_fn, variables, images, maps, target, **options)
        rows = _saliency_rows(table, model["label"])
        np.testing.assert_allclose([r["insertion_auc"] for r in rows], curves["insertion"].auc,
                                   atol=1e-5)  # fmt: skip
        aucs.append(curves["deletion"].auc)
    assert np.abs(np.asarray(aucs[0]) - np.asarray(aucs[1])).max() > 1e-4  # two distinct heads


@pytest.mark.slow  # ~1-2 min: DAX's per-image fits compile once per sweep
def test_dax_smoke_equals_library_calls(tmp_path):
    table, rows, (_, _, _, masks), _, maps = _cnn_smoke_saliency("dax", tmp_path)
    iou = localisation.iou(maps, masks, threshold=0.2)
    np.testing.assert_allclose([r["iou"] for r in rows], iou, atol=1e-5)
    np.testing.assert_allclose([r["pointing_game"] for r in rows],
                               localisation.pointing_game(maps, masks), atol=1e-5)  # fmt: skip
    dax_rows = [r for r in table["rows"] if r["method"] == "dax"]
    assert len(dax_rows) == 8 and all(0 <= r["iou"] <= 1 for r in dax_rows)


@pytest.mark.slow  # 4-5 min each on 2 shared CPU cores (EfficientNet-Lite0 at 224², 8 devices)
@pytest.mark.parametrize("paper", ["mfaba", "fex"])
def test_lite0_photo_smokes_equal_library_calls(tmp_path, paper):
    config, table = _run_smoke(paper, tmp_path)
    images, _ = open_source(config["data"]).read(np.arange(4))
    apply_fn, variables = _lite0()
    target = np.asarray(np.argmax(apply_fn(variables, images), axis=-1))
    assert 281 <= target[1] <= 285  # chelsea: a cat (ImageNet 281-285), so the weights are real
    maps = fx.saliency(apply_fn, variables, images, target)
    options = config["metrics"][0]["options"]
    curves = fx.insertion_deletion(apply_fn, variables, images, maps, target, **options)
    rows = _saliency_rows(table, "effnet_lite0")
    assert [r["target"] for r in rows] == target.tolist()
    np.testing.assert_allclose([r["insertion_auc"] for r in rows], curves["insertion"].auc,
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose([r["deletion_auc"] for r in rows], curves["deletion"].auc,
                               atol=1e-5)  # fmt: skip
    assert len(table["rows"]) == 2 * 4
