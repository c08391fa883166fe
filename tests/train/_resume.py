"""What the kill tests share: run ``_kill_driver.py`` in a subprocess, and compare runs."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
DRIVER = pathlib.Path(__file__).with_name("_kill_driver.py")


def run_driver(argv: list[str], timeout: int, **kill: str) -> subprocess.CompletedProcess:
    """``fastxai ARGV`` in a subprocess, SIGKILLed in the save named by ``kill``
    (``KILL_DIR``, ``KILL_STEP``; none: run to the end)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", **kill}
    return subprocess.run(
        [sys.executable, str(DRIVER), *argv], env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def assert_same_params(a, b) -> None:
    """Bit-identical pytrees (at least one leaf)."""
    flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(flat_a) == len(flat_b) > 0
    for x, y in zip(flat_a, flat_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def logged_steps(workdir: pathlib.Path) -> list[int]:
    """The steps of ``workdir/train_log.jsonl``, in order."""
    lines = (workdir / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]
