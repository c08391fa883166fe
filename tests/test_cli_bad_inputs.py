"""The bad-input matrix for every CLI verb (issue 20), the CLI half of
``tests/test_bad_inputs.py``.

Each row runs ``fastxai VERB ...`` with one bad argument and asserts exit code 2,
exactly one line on stderr naming the argument, and no traceback, before any
compute: generating benchmark data or loading / training a target fails the row.
The README states the size of the two files' matrix together.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from fastxai_jax.cli import main

READ_ONLY = "/sys/fastxai-robust"  # not writable, even for root


@pytest.fixture
def paths(tmp_path: pathlib.Path) -> dict[str, str]:
    afile = tmp_path / "afile"
    afile.write_text("x")
    not_image = tmp_path / "text.png"
    not_image.write_text("not an image")
    image = tmp_path / "tiny.png"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(image)
    demo = tmp_path / "old_demo"
    (demo / "target").mkdir(parents=True)
    (demo / "target" / "metrics.json").write_text(json.dumps({"config": {"steps": 1}}))
    broken = tmp_path / "broken.py"
    broken.write_text("def (\n")
    return {
        "FILE": str(afile),
        "UNDER_FILE": str(afile / "sub"),
        "NOT_IMAGE": str(not_image),
        "IMAGE": str(image),
        "OUT": str(tmp_path / "out"),
        "WORK": str(tmp_path / "work"),
        "OLD_DEMO": str(demo),
        "BROKEN_PY": str(broken),
        "MISSING": str(tmp_path / "missing.msgpack"),
    }


@pytest.fixture
def no_compute(monkeypatch):
    """Any benchmark generation or target loading / training fails the row."""
    from fastxai_jax.data import groundtruth
    from fastxai_jax.train import target

    def forbidden(*args, **kwargs):
        raise AssertionError("compute started before the argument check")

    for module, name in [
        (groundtruth, "make_benchmark"),
        (target, "make_benchmark"),
        (target, "load_or_train_target"),
        (target, "train_target"),
    ]:
        monkeypatch.setattr(module, name, forbidden)


EXPLAIN = ["explain", "--method", "saliency", "--dataset", "groundtruth", "--out", "OUT"]
EXPLAIN_IMAGE = ["explain", "--method", "saliency", "--images", "IMAGE", "--out", "OUT"]
EVALUATE = ["evaluate", "--methods", "saliency", "--num", "2", "--out", "OUT", "--workdir", "WORK"]
DEMO = ["demo", "--out", "OUT", "--workdir", "WORK", "--no-progress"]
TRAIN_EXPLAINER = ["train-explainer", "--method", "fex", "--workdir", "WORK", "--no-progress"]
TRAIN_EXPLAINER += ["--target-workdir", "WORK/target"]

# row: (argv, text the one stderr line must contain)
ROWS: dict[str, tuple[list[str], str]] = {
    # ------------------------------------------------------------------ explain
    "explain/unknown_method_first": (
        ["explain", "--method", "nope", "--out", "OUT"],  # was: "pass exactly one of --images"
        "unknown --method 'nope'",
    ),
    "explain/no_method": (["explain", "--dataset", "groundtruth", "--out", "OUT"], "--method"),
    "explain/no_out": (["explain", "--method", "ig", "--dataset", "groundtruth"], "--out"),
    "explain/no_source": (["explain", "--method", "ig", "--out", "OUT"], "--images"),
    "explain/two_sources": ([*EXPLAIN, "--images", "IMAGE"], "exactly one of"),
    "explain/num_huge": ([*EXPLAIN, "--num", "100000000"], "--num"),
    "explain/num_zero": ([*EXPLAIN, "--num", "0"], "--num"),
    "explain/num_text": ([*EXPLAIN, "--num", "eight"], "--num"),
    "explain/num_with_images": ([*EXPLAIN_IMAGE, "--num", "3"], "--num"),
    "explain/batch_size_zero": ([*EXPLAIN, "--batch-size", "0"], "--batch-size"),
    "explain/image_size_zero": ([*EXPLAIN, "--image-size", "0"], "--image-size"),
    "explain/num_classes_zero": ([*EXPLAIN, "--untrained", "--num-classes", "0"], "--num-classes"),
    "explain/option_typo": (
        ["explain", "--method", "ig", "--dataset", "groundtruth", "--out", "OUT"]
        + ["--option", "num_step=5"],
        "num_step",
    ),
    "explain/option_typo_rise": (
        ["explain", "--method", "rise", "--dataset", "groundtruth", "--out", "OUT"]
        + ["--option", "num_mask=5"],
        "num_mask",
    ),
    "explain/option_not_pair": ([*EXPLAIN, "--option", "num_steps"], "KEY=VALUE"),
    "explain/learned_without_ckpt": (
        ["explain", "--method", "fex", "--dataset", "groundtruth", "--out", "OUT"],
        "--explainer-ckpt",
    ),
    "explain/image_missing": (
        ["explain", "--method", "ig", "--images", "MISSING", "--out", "OUT"],
        "missing.msgpack",
    ),
    "explain/image_not_an_image": (
        ["explain", "--method", "ig", "--images", "NOT_IMAGE", "--out", "OUT"],
        "text.png",
    ),
    "explain/out_is_file": (["explain", "--method", "ig", "--dataset", "groundtruth"], "afile"),
    "explain/out_under_file": (
        ["explain", "--method", "ig", "--dataset", "groundtruth", "--out", "UNDER_FILE"],
        "afile",
    ),
    "explain/out_read_only": (
        ["explain", "--method", "ig", "--dataset", "groundtruth", "--out", READ_ONLY],
        READ_ONLY,
    ),
    "explain/workdir_is_file": ([*EXPLAIN, "--workdir", "FILE"], "afile"),
    "explain/workdir_read_only": ([*EXPLAIN, "--workdir", READ_ONLY], READ_ONLY),
    "explain/target_seed_untrained": (
        [*EXPLAIN, "--untrained", "--target-seed", "1"],
        "--target-seed",
    ),
    "explain/weights_missing": ([*EXPLAIN_IMAGE, "--weights", "MISSING"], "missing.msgpack"),
    "explain/resnet_without_weights": (
        [*EXPLAIN_IMAGE, "--model", "resnet18", "--image-size", "8"],
        "--weights",
    ),
    "explain/dataset_choice": ([*EXPLAIN, "--dataset", "imagenet"], "invalid choice"),
    # ----------------------------------------------------------------- evaluate
    "evaluate/unknown_method": (
        ["evaluate", "--methods", "saliency,nope", "--out", "OUT"],
        "unknown method 'nope'",
    ),
    "evaluate/no_methods": (["evaluate", "--methods", ",", "--out", "OUT"], "--methods"),
    "evaluate/learned_method": (["evaluate", "--methods", "fex", "--out", "OUT"], "'fex'"),
    "evaluate/option_typo": ([*EVALUATE, "--options", '{"saliency": {"abs_": 1}}'], "abs_"),
    "evaluate/option_typo_ig": (
        ["evaluate", "--methods", "ig", "--out", "OUT", "--options", '{"ig": {"num_step": 3}}'],
        "num_step",
    ),
    "evaluate/options_for_absent_method": (
        [*EVALUATE, "--options", '{"rise": {"num_masks": 8}}'],
        "'rise', which is not in --methods",
    ),
    "evaluate/options_not_json": ([*EVALUATE, "--options", "{ig: 3}"], "--options"),
    "evaluate/options_not_dicts": ([*EVALUATE, "--options", '{"saliency": 3}'], "--options"),
    "evaluate/num_zero": ([*EVALUATE, "--num", "0"], "--num"),
    "evaluate/num_huge": ([*EVALUATE, "--num", "100000000"], "--num"),
    "evaluate/batch_size_zero": ([*EVALUATE, "--batch-size", "0"], "--batch-size"),
    "evaluate/image_size_zero": ([*EVALUATE, "--image-size", "0"], "--image-size"),
    "evaluate/image_size_other": ([*EVALUATE, "--image-size", "32"], "--image-size 32"),
    "evaluate/target_steps_zero": ([*EVALUATE, "--target-steps", "0"], "--target-steps"),
    "evaluate/target_seed_untrained": (
        [*EVALUATE, "--untrained", "--target-seed", "3"],
        "--target-seed",
    ),
    "evaluate/iou_threshold_text": ([*EVALUATE, "--iou-threshold", "median"], "--iou-threshold"),
    "evaluate/iou_threshold_2": ([*EVALUATE, "--iou-threshold", "2"], "iou_threshold"),
    "evaluate/granularity": ([*EVALUATE, "--granularity", "pixels"], "invalid choice"),
    "evaluate/substrate": ([*EVALUATE, "--deletion-substrate", "grey"], "substrate"),
    "evaluate/out_is_file": (
        ["evaluate", "--methods", "saliency", "--out", "FILE", "--workdir", "WORK"],
        "afile",
    ),
    "evaluate/out_read_only": (
        ["evaluate", "--methods", "saliency", "--out", READ_ONLY, "--workdir", "WORK"],
        READ_ONLY,
    ),
    "evaluate/workdir_is_file": ([*EVALUATE, "--workdir", "FILE"], "afile"),
    "evaluate/workdir_read_only": ([*EVALUATE, "--workdir", READ_ONLY], READ_ONLY),
    "evaluate/untrained_other_model": ([*EVALUATE, "--model", "resnet18"], "--untrained"),
    # --------------------------------------------------------------------- demo
    "demo/out_is_file": (["demo", "--out", "FILE", "--workdir", "WORK"], "afile"),
    "demo/out_read_only": (["demo", "--out", READ_ONLY, "--workdir", "WORK"], READ_ONLY),
    "demo/workdir_is_file": (["demo", "--out", "OUT", "--workdir", "FILE"], "afile"),
    "demo/workdir_read_only": (["demo", "--out", "OUT", "--workdir", READ_ONLY], READ_ONLY),
    "demo/workdir_of_an_earlier_demo": ([*DEMO, "--workdir", "OLD_DEMO"], "earlier demo"),
    "demo/num_eval_zero": ([*DEMO, "--num-eval", "0"], "--num-eval"),
    "demo/rise_masks_zero": ([*DEMO, "--rise-masks", "0"], "--rise-masks"),
    "demo/fex_steps_zero": ([*DEMO, "--fex-steps", "0"], "--fex-steps"),
    "demo/unknown_method": ([*DEMO, "--methods", "rise,nope"], "unknown method 'nope'"),
    "demo/unknown_photo_method": ([*DEMO, "--photo-methods", "nope"], "'nope'"),
    "demo/unknown_learned": ([*DEMO, "--learned", "fex,nope"], "'nope'"),
    "demo/seed_text": ([*DEMO, "--seed", "one"], "--seed"),
    # ---------------------------------------------------------- train-explainer
    "train-explainer/unknown_method": (
        ["train-explainer", "--method", "nope", "--workdir", "WORK"],
        "unknown --method 'nope'",
    ),
    "train-explainer/no_workdir": (["train-explainer", "--method", "fex"], "--workdir"),
    "train-explainer/steps_zero": ([*TRAIN_EXPLAINER, "--steps", "0"], "--steps"),
    "train-explainer/batch_size_zero": ([*TRAIN_EXPLAINER, "--batch-size", "0"], "--batch-size"),
    "train-explainer/num_train_zero": ([*TRAIN_EXPLAINER, "--num-train", "0"], "--num-train"),
    "train-explainer/checkpoint_every_zero": (
        [*TRAIN_EXPLAINER, "--checkpoint-every", "0"],
        "--checkpoint-every",
    ),
    "train-explainer/image_size_zero": ([*TRAIN_EXPLAINER, "--image-size", "0"], "--image-size"),
    "train-explainer/devices_zero": ([*TRAIN_EXPLAINER, "--devices", "0"], "--devices"),
    "train-explainer/lr_zero": ([*TRAIN_EXPLAINER, "--lr", "0"], "--lr"),
    "train-explainer/lr_nan": ([*TRAIN_EXPLAINER, "--lr", "nan"], "--lr"),
    "train-explainer/loss_choice": ([*TRAIN_EXPLAINER, "--loss", "ppo2"], "invalid choice"),
    "train-explainer/workdir_is_file": ([*TRAIN_EXPLAINER, "--workdir", "FILE"], "afile"),
    "train-explainer/workdir_read_only": ([*TRAIN_EXPLAINER, "--workdir", READ_ONLY], READ_ONLY),
    "train-explainer/target_workdir_is_file": (
        [*TRAIN_EXPLAINER, "--target-workdir", "FILE"],
        "afile",
    ),
    "train-explainer/target_weights_missing": (
        [*TRAIN_EXPLAINER, "--target-weights", "MISSING"],
        "missing.msgpack",
    ),
    "train-explainer/target_seed_with_weights": (
        [*TRAIN_EXPLAINER, "--target-weights", "MISSING", "--target-seed", "2"],
        "--target-seed",
    ),
    # -------------------------------------------------------------------- sweep
    "sweep/unknown_module": (["sweep", "no_such_config"], "no_such_config"),
    "sweep/missing_file": (["sweep", "MISSING"], "missing.msgpack"),
    "sweep/no_get_config": (["sweep", "IMAGE"], "tiny.png"),
    "sweep/num_processes_text": (["sweep", "sweep_groundtruth", "--num-processes", "two"], "two"),
    "sweep/broken_config": (["sweep", "BROKEN_PY"], "broken.py"),
    # ------------------------------------------------------------------- models
    "models/unknown_flag": (["models", "--jsn"], "--jsn"),
    "models/extra_argument": (["models", "resnet18"], "resnet18"),
}


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("row", list(ROWS))
def test_cli_refuses_in_one_line_before_compute(row, paths, no_compute, capsys):
    argv, expected = ROWS[row]
    if row.endswith("/out_is_file") and "--out" not in argv:
        argv = [*argv, "--out", "FILE"]
    argv = [paths.get(arg, arg) for arg in argv]
    argv = [arg.replace("WORK/", paths["WORK"] + "/") for arg in argv]
    code, err = _run(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected in lines[0], lines[0]


def test_every_verb_has_rows():
    from fastxai_jax.cli import build_parser

    verbs = {v.replace("_", "-") for v in build_parser()._subparsers._group_actions[0].choices}
    covered = {row.split("/")[0] for row in ROWS} | {"train-target"}  # test_bad_inputs.py
    assert verbs <= covered, verbs - covered
