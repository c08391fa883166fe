"""Kill tests for a learned explainer: ``fastxai train-explainer --method fex`` (issue 20).

A subprocess is SIGKILLed in the middle of the final ``explainer/`` save, or of
the step-4 checkpoint save (``_kill_driver.py``); the same command run again
finishes with params bit-identical to an uninterrupted run and a training log
without duplicate steps.
"""

from __future__ import annotations

import pathlib
import signal
import subprocess

import jax
import jax.numpy as jnp
import pytest
from _resume import assert_same_params, logged_steps, run_driver

from fastxai_jax.train.checkpoint import Checkpointer, load_params

ARGS = ["train-explainer", "--method", "fex", "--num-train", "32", "--steps", "6"]
ARGS += ["--batch-size", "8", "--checkpoint-every", "2", "--no-progress"]
ARGS += ["--hidden-size", "16", "--depth", "1", "--patch-size", "16", "--num-masks", "2"]

pytestmark = pytest.mark.slow  # ~1 min per training subprocess on 2 shared cores


@pytest.fixture(scope="module")
def target_workdir(tmp_path_factory):
    """A benchmark small_cnn target (random weights, default config): nothing to train."""
    import fastxai_jax as fx
    from fastxai_jax.data.groundtruth import NUM_CLASSES
    from fastxai_jax.train import target
    from fastxai_jax.train.checkpoint import save_params

    workdir = tmp_path_factory.mktemp("target")
    module, family = fx.models.build("small_cnn", num_classes=NUM_CLASSES)
    variables = module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32))
    saved = {"config": target._config(0), "metrics": {}, "num_classes": NUM_CLASSES}
    save_params(workdir / "params", variables, {**saved, "family": family})
    return workdir


def _run(workdir, target_workdir, **kill: str) -> subprocess.CompletedProcess:
    argv = [*ARGS, "--workdir", str(workdir), "--target-workdir", str(target_workdir)]
    return run_driver(argv, timeout=900, **kill)


def _params(workdir: pathlib.Path):
    return load_params(workdir / "explainer")[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, target_workdir):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    done = _run(workdir, target_workdir)
    assert done.returncode == 0, done.stderr
    assert logged_steps(workdir) == list(range(6))
    return workdir


def test_fex_kill_during_final_explainer_save_resumes(reference, target_workdir, tmp_path):
    killed = _run(tmp_path, target_workdir, KILL_DIR="explainer")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "summary.json").exists()
    assert (tmp_path / "checkpoints" / "6").is_dir()
    again = _run(tmp_path, target_workdir)
    assert again.returncode == 0, again.stderr
    assert_same_params(_params(tmp_path), _params(reference))
    assert logged_steps(tmp_path) == list(range(6))


def test_fex_kill_during_checkpoint_save_resumes(reference, target_workdir, tmp_path):
    killed = _run(tmp_path, target_workdir, KILL_DIR="checkpoints", KILL_STEP="4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [2]
    again = _run(tmp_path, target_workdir)
    assert again.returncode == 0, again.stderr
    assert_same_params(_params(tmp_path), _params(reference))
    assert logged_steps(tmp_path) == list(range(6))  # no duplicates of steps 2, 3
