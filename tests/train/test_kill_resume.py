"""Kill tests for ``fastxai train-target`` (issue 20, defects 2, 4 and 9).

A subprocess is SIGKILLed in the middle of a save (``_kill_driver.py``); the
same command run again must finish with params bit-identical to an
uninterrupted run, a log without duplicate steps, and a ``train_seconds`` that
counts the killed part too. A checkpoint with flipped bytes is refused, naming
the file.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import signal
import subprocess

import pytest
from _resume import assert_same_params, logged_steps, run_driver

from fastxai_jax.train.checkpoint import Checkpointer, load_params

ARGS = ["train-target", "--num-train", "64", "--num-test", "16", "--steps", "6"]
ARGS += ["--batch-size", "8", "--checkpoint-every", "2", "--no-progress"]

pytestmark = pytest.mark.slow  # ~30 s per training subprocess on 2 shared cores


def _run(workdir: pathlib.Path, **kill: str) -> subprocess.CompletedProcess:
    return run_driver([*ARGS, "--workdir", str(workdir)], timeout=600, **kill)


def _params(workdir: pathlib.Path):
    variables, _ = load_params(workdir / "params")
    return variables


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    done = _run(workdir)
    assert done.returncode == 0, done.stderr
    return workdir


def test_kill_during_final_params_save_resumes(reference, tmp_path):
    killed = _run(tmp_path, KILL_DIR="params")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with Checkpointer(tmp_path / "params") as ckpt:
        assert ckpt.latest_step() is None  # only orbax's unfinished temporary directory
    assert (tmp_path / "checkpoints" / "6").is_dir()
    again = _run(tmp_path)
    assert again.returncode == 0, again.stderr  # was: "no checkpoint found in .../params"
    assert_same_params(_params(tmp_path), _params(reference))
    assert logged_steps(tmp_path) == list(range(6))


def test_kill_during_checkpoint_save_resumes_without_duplicate_log(reference, tmp_path):
    killed = _run(tmp_path, KILL_DIR="checkpoints", KILL_STEP="4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [2]
    assert logged_steps(tmp_path) == [0, 1, 2, 3]  # steps 2, 3 will be recomputed
    killed_seconds = json.loads((tmp_path / "train_log.jsonl").read_text().splitlines()[1])["time"]
    again = _run(tmp_path)
    assert again.returncode == 0, again.stderr
    assert_same_params(_params(tmp_path), _params(reference))
    assert logged_steps(tmp_path) == list(range(6))  # was: 0 1 2 3 2 3 4 5
    times = [json.loads(line)["time"] for line in (tmp_path / "train_log.jsonl").open()]
    assert times == sorted(times)  # the resumed part continues the killed part's clock
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train_seconds"] == pytest.approx(times[-1])
    assert metrics["train_seconds"] > killed_seconds


def test_flipped_checkpoint_is_refused_naming_the_file(reference, tmp_path, capsys):
    from fastxai_jax.cli import main

    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    shutil.rmtree(workdir / "params")  # so that the run resumes from checkpoints/6
    data = max(
        (p for p in (workdir / "checkpoints" / "6").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    raw = bytearray(data.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[i] ^= 0xFF
    data.write_bytes(bytes(raw))
    code = main([*ARGS, "--workdir", str(workdir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"checkpoint file {workdir / 'checkpoints' / '6' / 'state'} is corrupt" in err[0]
