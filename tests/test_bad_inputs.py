"""The bad-input matrix (issue 20): every row is refused clearly, before any compute.

Each row feeds one bad input to one public entry point and asserts a
``ValueError`` / ``OSError`` (``FileNotFoundError``, ``NotADirectoryError``,
``PermissionError``) whose message names the argument, or, for the CLI, exit
code 2 with exactly one line on stderr and no traceback. The README states the
number of rows (``pytest --collect-only -q tests/test_bad_inputs.py``).
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fastxai_jax as fx
from fastxai_jax.explainers import registry
from fastxai_jax.train import checkpoint

H = W = 8
CLASSES = 4


def _apply(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"]


@pytest.fixture(scope="module")
def tiny():
    params = {"w": jax.random.normal(jax.random.key(0), (H * W * 3, CLASSES)) * 0.1}
    x = jax.random.uniform(jax.random.key(1), (2, H, W, 3))
    return params, x


# ----------------------------------------------------------------------------- images

BAD_IMAGES = {
    "rank3": lambda x: x[0],
    "rank5": lambda x: x[None],
    "one_channel": lambda x: x[..., :1],
    "four_channels": lambda x: jnp.concatenate([x, x[..., :1]], -1),
    "channels_first": lambda x: jnp.transpose(x, (0, 3, 1, 2)),
    "uint8": lambda x: np.asarray(x * 255, np.uint8),
    "int32": lambda x: np.asarray(x * 255, np.int32),
    "bool": lambda x: np.asarray(x) > 0.5,
    "range_0_255": lambda x: x * 255.0,
    "range_minus_half_half": lambda x: x - 0.5,
    "normalised_minus1_1": lambda x: 2.0 * x - 1.0,
    "nan": lambda x: x.at[0, 1, 1, 0].set(jnp.nan),
    "inf": lambda x: x.at[1, 2, 2, 1].set(jnp.inf),
    "empty_batch": lambda x: x[:0],
}

METHODS = [m for m in fx.available_methods() if not registry.is_learned(m)]  # per-input


def _options(method, key):
    options = {"key": key} if registry.get_method(method).needs_key else {}
    if method == "gradcam":
        module, _ = fx.models.build("small_cnn", num_classes=CLASSES)
        options.update(module=module, layer="conv_last", family="half")
    return options


@pytest.mark.parametrize("bad", sorted(BAD_IMAGES))
@pytest.mark.parametrize("method", METHODS)
def test_attribute_refuses_bad_images(tiny, method, bad, key):
    params, x = tiny
    with pytest.raises(ValueError, match=r"\bx\b"):
        fx.attribute(method, _apply, params, BAD_IMAGES[bad](x), 0, **_options(method, key))


@pytest.mark.parametrize("bad", sorted(BAD_IMAGES))
@pytest.mark.parametrize("method", METHODS)
def test_method_function_refuses_bad_images(tiny, method, bad, key):
    """The registered function itself (not only ``attribute``) checks the contract."""
    params, x = tiny
    target = jnp.zeros((2,), jnp.int32)
    fn = registry.get_method(method).fn
    with pytest.raises(ValueError, match=r"\bx\b"):
        fn(_apply, params, BAD_IMAGES[bad](x), target, **{"key": key, **_options(method, key)})


def test_uint8_images_only_through_the_explicit_conversion(tiny):
    params, x = tiny
    raw = np.asarray(np.round(np.asarray(x) * 255), np.uint8)
    converted = fx.images_from_uint8(raw)
    np.testing.assert_array_equal(converted, raw.astype(np.float32) / 255.0)
    saliency = fx.attribute("saliency", _apply, params, converted, 0)
    assert saliency.shape == (2, H, W)
    with pytest.raises(ValueError, match="images must have dtype uint8"):
        fx.images_from_uint8(np.asarray(x))


# ----------------------------------------------------------------------------- targets

BAD_TARGETS = {
    "bool": True,
    "float": 1.5,
    "string": "cat",
    "out_of_range": CLASSES,
    "negative": -1,
    "too_long": [0, 1, 2],
    "too_short": [0],
    "float_array": np.array([0.0, 1.0]),
    "bool_array": np.array([True, False]),
    "matrix": np.zeros((2, 1), np.int32),
}


@pytest.mark.parametrize("bad", sorted(BAD_TARGETS))
@pytest.mark.parametrize("method", METHODS)
def test_attribute_refuses_bad_targets(tiny, method, bad, key):
    params, x = tiny
    with pytest.raises(ValueError, match=r"\btarget\b"):
        fx.attribute(method, _apply, params, x, BAD_TARGETS[bad], **_options(method, key))


@pytest.mark.parametrize("bad", sorted(BAD_TARGETS))
def test_resolve_target_refuses(tiny, bad):
    params, x = tiny
    with pytest.raises(ValueError, match=r"\btarget\b"):
        fx.resolve_target(_apply, params, x, BAD_TARGETS[bad])


# ----------------------------------------------------------------------------- metrics


# fx.metrics functions of (apply_fn, params, x, attribution, target)
CURVE_METRICS = ("insertion_deletion", "insertion", "deletion", "insertion_auc", "deletion_auc",
                 "pos_neg_perturbation", "adp_pic")  # fmt: skip


@pytest.mark.parametrize("bad", sorted(BAD_IMAGES))
@pytest.mark.parametrize("metric", sorted(CURVE_METRICS))
def test_curve_metrics_refuse_bad_images(tiny, metric, bad):
    params, x = tiny
    attribution = jnp.ones((2, H, W))
    with pytest.raises(ValueError, match=r"\bx\b|attribution"):
        getattr(fx.metrics, metric)(_apply, params, BAD_IMAGES[bad](x), attribution, 0)


@pytest.mark.parametrize("bad", ["bool", "float", "out_of_range", "too_long", "float_array"])
@pytest.mark.parametrize("metric", sorted(CURVE_METRICS))
def test_curve_metrics_refuse_bad_targets(tiny, metric, bad):
    params, x = tiny
    with pytest.raises(ValueError, match=r"\btarget\b"):
        getattr(fx.metrics, metric)(_apply, params, x, jnp.ones((2, H, W)), BAD_TARGETS[bad])


BAD_MAPS = {
    "rank2": lambda a: a[0],
    "wrong_batch": lambda a: a[:1],
    "nan": lambda a: a.at[0, 0, 0].set(jnp.nan),
    "string": lambda a: "map",
}


@pytest.mark.parametrize("bad", sorted(BAD_MAPS))
@pytest.mark.parametrize("metric", sorted(CURVE_METRICS))
def test_curve_metrics_refuse_bad_maps(tiny, metric, bad):
    params, x = tiny
    with pytest.raises(ValueError, match="attribution"):
        getattr(fx.metrics, metric)(_apply, params, x, BAD_MAPS[bad](jnp.ones((2, H, W))), 0)


CURVE_OPTIONS = {
    "num_steps_huge": ({"num_steps": 10**6}, "num_steps"),
    "num_steps_zero": ({"num_steps": 0}, "num_steps"),
    "num_steps_float": ({"num_steps": 2.5}, "num_steps"),
    "patch_larger_than_image": ({"granularity": "patch", "patch_size": 16}, "patch_size"),
    "patch_not_dividing": ({"granularity": "patch", "patch_size": 3}, "patch_size"),
    "patch_zero": ({"granularity": "patch", "patch_size": 0}, "patch_size"),
    "granularity": ({"granularity": "pixels"}, "granularity"),
    "score": ({"score": "logit"}, "score"),
    "deletion_substrate": ({"deletion_substrate": "grey"}, "deletion substrate"),
    "chunk_size": ({"chunk_size": -1}, "chunk_size"),
}


@pytest.mark.parametrize("row", sorted(CURVE_OPTIONS))
def test_insertion_deletion_refuses_bad_options(tiny, row):
    params, x = tiny
    options, name = CURVE_OPTIONS[row]
    with pytest.raises(ValueError, match=name):
        fx.metrics.insertion_deletion(_apply, params, x, jnp.ones((2, H, W)), 0, **options)


def test_pos_neg_refuses_patch_not_dividing(tiny):
    params, x = tiny
    with pytest.raises(ValueError, match="patch_size"):
        fx.metrics.pos_neg_perturbation(
            _apply, params, x, jnp.ones((2, H, W)), granularity="patch", patch_size=3
        )


# fx.metrics functions of (attribution, ground_truth)
LOCALISATION_METRICS = ("iou", "pointing_game", "relevance_mass", "segmentation_scores")


MASK = np.zeros((2, H, W), bool)
MASK[:, 2:5, 2:5] = True
BAD_MASKS = {
    "soft_float": np.full((2, H, W), 0.1, np.float32),
    "float_0_255": MASK.astype(np.float32) * 255,
    "wrong_shape": MASK[:, :4],
    "rank2": MASK[0],
    "boxes_wrong_width": np.zeros((2, 3)),
}


@pytest.mark.parametrize("bad", sorted(BAD_MASKS))
@pytest.mark.parametrize("metric", sorted(LOCALISATION_METRICS))
def test_localisation_metrics_refuse_bad_masks(metric, bad):
    with pytest.raises(ValueError, match="ground_truth"):
        getattr(fx.metrics, metric)(jnp.ones((2, H, W)), BAD_MASKS[bad])


@pytest.mark.parametrize("bad", sorted(BAD_MAPS))
@pytest.mark.parametrize("metric", sorted(LOCALISATION_METRICS))
def test_localisation_metrics_refuse_bad_maps(metric, bad):
    # A map of another batch size is reported against the mask it must match.
    with pytest.raises(ValueError, match="attribution|ground_truth must be a mask of shape"):
        getattr(fx.metrics, metric)(BAD_MAPS[bad](jnp.ones((2, H, W))), MASK)


LOCALISATION_OPTIONS = {
    "tolerance_nan": ("pointing_game", {"tolerance": float("nan")}, "tolerance"),
    "tolerance_negative": ("pointing_game", {"tolerance": -1.0}, "tolerance"),
    "tolerance_string": ("pointing_game", {"tolerance": "15"}, "tolerance"),
    "ties": ("pointing_game", {"ties": "last"}, "ties"),
    "iou_threshold_none": ("iou", {"threshold": None}, "threshold"),
    "iou_threshold_nan": ("iou", {"threshold": float("nan")}, "threshold"),
    "iou_threshold_2": ("iou", {"threshold": 2.0}, "threshold"),
    "iou_threshold_median": ("iou", {"threshold": "median"}, "threshold"),
    "segmentation_threshold_none": ("segmentation_scores", {"threshold": None}, "threshold"),
}


@pytest.mark.parametrize("row", sorted(LOCALISATION_OPTIONS))
def test_localisation_refuses_bad_options(row):
    metric, options, name = LOCALISATION_OPTIONS[row]
    with pytest.raises(ValueError, match=name):
        getattr(fx.metrics, metric)(jnp.ones((2, H, W)), MASK, **options)


def test_soft_mask_no_longer_scores_pointing_one():
    """A float mask of 0.1 everywhere used to count every pixel as inside (score 1.0)."""
    attribution = jnp.zeros((1, H, W)).at[0, 0, 0].set(1.0)
    with pytest.raises(ValueError, match="ground_truth"):
        fx.metrics.pointing_game(attribution, np.full((1, H, W), 0.1))
    # {0, 1} floats are still masks: the maximum at (0, 0) lies outside this one.
    assert float(fx.metrics.pointing_game(attribution, MASK[:1].astype(np.float32))[0]) == 0.0


@pytest.mark.parametrize(
    "metric, args, name",
    [
        ("sparseness", (jnp.ones((2, H)),), "attribution"),
        ("entropy", (jnp.full((2, H, W), jnp.nan),), "attribution"),
        ("sparseness", (jnp.ones((0, H, W)),), "attribution"),
        ("paired_difference", (np.ones(3), np.ones(4)), "a and b"),
        ("paired_difference", (np.array([1.0, np.nan]), np.ones(2)), "a"),
        ("boxes_to_masks", (np.zeros((2, 3)), (H, W)), "boxes"),
    ],
)
def test_other_metrics_refuse(metric, args, name):
    with pytest.raises(ValueError, match=name):
        getattr(fx.metrics, metric)(*args)


# ----------------------------------------------------------------------------- build / weights


@pytest.mark.parametrize(
    "args, kwargs, name",
    [
        (("resnet7",), {}, "model name"),
        (("small_cnn",), {"num_classes": 0}, "num_classes"),
        (("small_cnn",), {"num_classes": True}, "num_classes"),
        (("small_cnn",), {"num_classes": 2.0}, "num_classes"),
        (("small_cnn",), {"num_classes": 3, "depth_typo": 2}, "options"),
    ],
)
def test_build_refuses(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        fx.models.build(*args, **kwargs)


@pytest.fixture(scope="module")
def resnet_file(fixtures_dir):
    return fixtures_dir / "torchvision_resnet18.safetensors"


def _bad_weight_files(tmp_path, resnet_file, fixtures_dir):
    from safetensors.numpy import load_file, save_file

    nan_path = tmp_path / "nan.safetensors"
    state = load_file(str(resnet_file))
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"].copy()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = np.nan
    save_file(state, str(nan_path))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 10)
    (tmp_path / "adir.safetensors").mkdir()
    return {
        "missing": (tmp_path / "none.safetensors", FileNotFoundError, "none.safetensors"),
        "directory": (tmp_path / "adir.safetensors", FileNotFoundError, "adir"),
        "corrupt": (corrupt, ValueError, "corrupt.safetensors"),
        "nan_weights": (nan_path, ValueError, r"nan\.safetensors .*NaN"),
        "another_models": (
            fixtures_dir / "timm_vit_tiny_patch16_224.safetensors",
            ValueError,
            "layout",
        ),
        "wrong_extension": (tmp_path / "w.npz", ValueError, "extension"),
    }


@pytest.mark.parametrize(
    "row", ["missing", "directory", "corrupt", "nan_weights", "another_models", "wrong_extension"]
)
def test_load_pretrained_refuses(tmp_path, resnet_file, fixtures_dir, row):
    (tmp_path / "w.npz").write_bytes(b"x")
    path, error, pattern = _bad_weight_files(tmp_path, resnet_file, fixtures_dir)[row]
    with pytest.raises(error, match=pattern):
        fx.models.load_pretrained("resnet18", path)


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture
def saved_params(tmp_path):
    # Large enough that the array data, not orbax's metadata, is the largest file.
    params = {"dense": {"kernel": np.arange(4096, dtype=np.float32).reshape(64, 64)}}
    checkpoint.save_params(tmp_path / "params", params, {"model": "a"})
    return tmp_path / "params", params


def flip_bytes(directory: pathlib.Path, count: int = 64) -> pathlib.Path:
    """Flips ``count`` bytes in the middle of the largest file under ``directory``."""
    largest = max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    middle = len(data) // 2
    for i in range(middle, min(middle + count, len(data))):
        data[i] ^= 0xFF
    largest.write_bytes(bytes(data))
    return largest


def test_load_params_refuses_missing_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing"):
        checkpoint.load_params(tmp_path / "nothing")
    (tmp_path / "afile").write_text("x")
    with pytest.raises((FileNotFoundError, NotADirectoryError, ValueError), match="afile"):
        checkpoint.load_params(tmp_path / "afile")


def test_load_params_refuses_flipped_bytes(saved_params):
    path, _ = saved_params
    flip_bytes(path)
    with pytest.raises(ValueError, match=r"checkpoint file .*params.* is corrupt"):
        checkpoint.load_params(path)


def test_load_params_refuses_another_models(saved_params):
    path, _ = saved_params
    template = {"dense": {"kernel": np.zeros((4, 4), np.float32)}}
    with pytest.raises(ValueError, match=r"'dense/kernel' has shape"):
        checkpoint.load_params(path, template=template)
    with pytest.raises(ValueError, match="'conv/kernel'"):
        checkpoint.load_params(path, template={"conv": {"kernel": np.zeros((64, 64))}})


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda d: checkpoint.Checkpointer(d, max_to_keep=0), "max_to_keep"),
        (lambda d: checkpoint.Checkpointer(d).save(-1, {"a": np.ones(2)}), "step"),
        (
            lambda d: checkpoint.Checkpointer(d).save(0, {"a": np.ones(2)}, {"f": object()}),
            "config",
        ),
        (lambda d: checkpoint.save_params(d, {"a": np.ones(2)}, {1j: 2}), "config"),
        (
            lambda d: checkpoint.Checkpointer(d).restore({"a": np.ones(2)}, step=3),
            "ckpt",
        ),
    ],
)
def test_checkpointer_refuses(tmp_path, call, name):
    with pytest.raises((ValueError, FileNotFoundError), match=name):
        call(tmp_path / "ckpt")


# ----------------------------------------------------------------------------- CLI train-target


def _cli(argv, capsys):
    from fastxai_jax.cli import main

    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    err = capsys.readouterr().err
    return code, err


def _assert_one_line_error(code, err, pattern):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert pattern in lines[0], lines[0]


SMALL = ["--num-train", "16", "--num-test", "8", "--steps", "2", "--batch-size", "8"]
SMALL += ["--no-progress"]


def _cli_rows(tmp_path: pathlib.Path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    return {
        "workdir_is_file": (["--workdir", str(afile)], "afile"),
        "workdir_under_file": (["--workdir", str(afile / "sub")], "afile"),
        "workdir_read_only": (["--workdir", "/sys/fastxai-robust"], "/sys/fastxai-robust"),
        "steps_zero": (["--steps", "0"], "steps"),
        "steps_text": (["--steps", "ten"], "--steps"),
        "batch_size_zero": (["--batch-size", "0"], "batch_size"),
        "num_train_negative": (["--num-train", "-5"], "num_train"),
        "lr_zero": (["--lr", "0"], "lr"),
        "lr_nan": (["--lr", "nan"], "lr"),
        "lr_inf": (["--lr", "inf"], "lr"),
        "null_fraction_one": (["--null-fraction", "1.0"], "null_fraction"),
        "null_fraction_negative": (["--null-fraction", "-0.1"], "null_fraction"),
        "checkpoint_every_zero": (["--checkpoint-every", "0"], "checkpoint-every"),
        "unknown_flag": (["--image-size", "0"], "unrecognized arguments"),
    }


CLI_ROW_NAMES = [
    "workdir_is_file",
    "workdir_under_file",
    "workdir_read_only",
    "steps_zero",
    "steps_text",
    "batch_size_zero",
    "num_train_negative",
    "lr_zero",
    "lr_nan",
    "lr_inf",
    "null_fraction_one",
    "null_fraction_negative",
    "checkpoint_every_zero",
    "unknown_flag",
]


@pytest.mark.parametrize("row", CLI_ROW_NAMES)
def test_cli_train_target_refuses_before_compute(tmp_path, capsys, row, monkeypatch):
    from fastxai_jax.train import target

    def no_compute(*args, **kwargs):
        raise AssertionError("the benchmark was generated before the argument check")

    monkeypatch.setattr(target, "make_benchmark", no_compute)
    extra, pattern = _cli_rows(tmp_path)[row]
    argv = ["train-target", "--workdir", str(tmp_path / "run"), *SMALL, *extra]
    code, err = _cli(argv, capsys)
    _assert_one_line_error(code, err, pattern)


def test_cli_train_target_other_options_in_workdir(tmp_path, capsys):
    """A finished target trained with other options is refused, not silently reused."""
    workdir = tmp_path / "run"
    other = {"model": "small_cnn", "seed": 0, "steps": 99}
    checkpoint.save_params(workdir / "params", {"a": np.ones(2)}, {"config": other})
    code, err = _cli(["train-target", "--workdir", str(workdir), *SMALL], capsys)
    _assert_one_line_error(code, err, "use another workdir")


def test_cli_train_target_corrupt_params(tmp_path, capsys):
    workdir = tmp_path / "run"
    from fastxai_jax.train.target import _config

    config = _config(0, num_train=16, num_test=8, steps=2, batch_size=8)
    weights = {"a": np.arange(4096, dtype=np.float32)}
    checkpoint.save_params(workdir / "params", weights, {"config": config})
    flip_bytes(workdir / "params")
    code, err = _cli(["train-target", "--workdir", str(workdir), *SMALL], capsys)
    _assert_one_line_error(code, err, "is corrupt")


@pytest.mark.slow  # trains a few steps: ~10 s idle, ~35 s on 2 shared cores
def test_cli_train_target_diverges_in_one_line(tmp_path, capsys):
    """``--lr 1e6``: "training diverged at step N", not a FloatingPointError traceback."""
    argv = ["train-target", "--workdir", str(tmp_path / "run"), *SMALL, "--steps", "6"]
    code, err = _cli([*argv, "--lr", "1e6"], capsys)
    _assert_one_line_error(code, err, "training diverged at step ")
    assert json.loads(json.dumps(err))  # a plain string


def test_cli_unknown_verb_is_one_line(capsys):
    code, err = _cli(["train-targett"], capsys)
    _assert_one_line_error(code, err, "invalid choice")


@pytest.mark.parametrize("method", METHODS)
def test_attribute_refuses_unknown_option_names(tiny, method, key):
    params, x = tiny
    with pytest.raises(ValueError, match="num_step"):
        fx.attribute(method, _apply, params, x, 0, num_step=5, **_options(method, key))
