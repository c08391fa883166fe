"""Issue 20, defect 1: ``fastxai explain`` with a learned explainer explains the
class asked for, and refuses a target whose class count differs from its own."""

import jax
import numpy as np
import pytest

from fastxai_jax.cli import main
from fastxai_jax.data.groundtruth import EVAL_SEED, make_benchmark
from fastxai_jax.explainers.learned import fex, runs

SIZE = 64


@pytest.fixture(scope="module")
def fex_run(tmp_path_factory):
    """A saved (untrained) FEX for a 10-class target; its actor has one output per class."""
    workdir = tmp_path_factory.mktemp("fex")
    config = fex.FexConfig(
        num_classes=10, image_size=SIZE, patch_size=16, hidden_size=16, depth=1, num_heads=2,
        mlp_dim=32, explainer_family="half", target_family="half",
    )  # fmt: skip
    learned = fex.make(config, None, None)
    runs.save(workdir, runs.Trained("fex", learned, fex.init_params(config, jax.random.key(0)), 10))
    return workdir


def _argv(workdir, out, *extra):
    return [
        "explain", "--method", "fex", "--model", "small_cnn", "--untrained", "--dataset",
        "groundtruth", "--num", "2", "--image-size", str(SIZE), "--no-png",
        "--explainer-ckpt", str(workdir), "--out", str(out), *extra,
    ]  # fmt: skip


def test_explain_cli_gives_the_map_of_the_class_asked(fex_run, tmp_path, capsys):
    images = make_benchmark(2, seed=EVAL_SEED, image_size=SIZE)["images"]
    trained = runs.load(fex_run)
    maps = {}
    for target in (3, 5):
        out = tmp_path / f"t{target}"
        assert main(_argv(fex_run, out, "--num-classes", "10", "--target", str(target))) == 0
        maps[target] = np.load(out / "attributions.npy")
        np.testing.assert_allclose(
            maps[target], trained.explain(np.asarray(images, np.float32), target), rtol=1e-5
        )
    assert np.abs(maps[3] - maps[5]).max() > 1e-4  # not one map under two labels
    # a target model with 8 classes is refused before any explanation is written
    out = tmp_path / "eight"
    assert main(_argv(fex_run, out, "--num-classes", "8", "--target", "3")) == 2
    err = capsys.readouterr().err
    assert "10 classes" in err and "apply_fn" in err and len(err.strip().splitlines()) == 1
    assert not (out / "attributions.npy").exists()
