"""Kill tests for a learned explainer: ``fastxai train-explainer --method fex`` (issue 20).

A subprocess is SIGKILLed in the middle of the final ``explainer/`` save, or of
the step-4 checkpoint save (``_kill_driver.py``); the same command run again
finishes with params bit-identical to an uninterrupted run and a training log
without duplicate steps.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.train.checkpoint import Checkpointer, load_params

REPO = pathlib.Path(__file__).resolve().parents[2]
DRIVER = pathlib.Path(__file__).with_name("_kill_driver.py")
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
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", **kill}
    argv = [*ARGS, "--workdir", str(workdir), "--target-workdir", str(target_workdir)]
    return subprocess.run(
        [sys.executable, str(DRIVER), *argv], env=env, capture_output=True, text=True, timeout=900
    )


def _params(workdir: pathlib.Path):
    return load_params(workdir / "explainer")[0]


def _assert_same_params(a, b):
    flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(flat_a) == len(flat_b) > 0
    for x, y in zip(flat_a, flat_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bit-identical


def _logged_steps(workdir: pathlib.Path) -> list[int]:
    lines = (workdir / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, target_workdir):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    done = _run(workdir, target_workdir)
    assert done.returncode == 0, done.stderr
    assert _logged_steps(workdir) == list(range(6))
    return workdir


def test_fex_kill_during_final_explainer_save_resumes(reference, target_workdir, tmp_path):
    killed = _run(tmp_path, target_workdir, KILL_DIR="explainer")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "summary.json").exists()
    assert (tmp_path / "checkpoints" / "6").is_dir()
    again = _run(tmp_path, target_workdir)
    assert again.returncode == 0, again.stderr
    _assert_same_params(_params(tmp_path), _params(reference))
    assert _logged_steps(tmp_path) == list(range(6))


def test_fex_kill_during_checkpoint_save_resumes(reference, target_workdir, tmp_path):
    killed = _run(tmp_path, target_workdir, KILL_DIR="checkpoints", KILL_STEP="4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [2]
    again = _run(tmp_path, target_workdir)
    assert again.returncode == 0, again.stderr
    _assert_same_params(_params(tmp_path), _params(reference))
    assert _logged_steps(tmp_path) == list(range(6))  # no duplicates of steps 2, 3
