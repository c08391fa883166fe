"""Real multi-process and kill-and-resume runs of `fastxai sweep` in subprocesses."""

import json
import signal
import socket

import numpy as np
import pytest
from _sweep_helpers import cli, finish, launch, tiny_config, write_config

from fastxai_jax.sweep import store


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # ~60 s wall: three processes each compile the sweep
def test_two_processes_equal_one_process(tmp_path):
    """2 processes × 2 CPU devices (jax.distributed, Gloo) == 1 process × 4 devices, exactly."""
    one = write_config(tmp_path / "one.py", tiny_config(tmp_path / "one"))
    two = write_config(tmp_path / "two.py", tiny_config(tmp_path / "two"))
    address = f"localhost:{_free_port()}"
    procs = [
        launch(
            cli(two, "--coordinator", address, "--num-processes", "2", "--process-id", str(i)), 2
        )
        for i in range(2)
    ]
    reference = launch(cli(one), 4)
    try:
        outputs = [finish(p) for p in procs]
        finish(reference)
    finally:
        for p in (*procs, reference):
            p.kill()
    assert '"computed": 4' in outputs[0] and '"computed": 4' in outputs[1]
    merged = (tmp_path / "two" / "results.csv").read_text()
    assert merged == (tmp_path / "one" / "results.csv").read_text()
    assert len(merged.splitlines()) == 1 + 2 * 10  # header + 2 methods × 10 images
    assert not (tmp_path / "two" / "results.json").read_text() == ""
    assert len(store.computed_log(tmp_path / "two")) == 4  # only process 0 writes markers
    # Each process wrote its own rows (no gather); the marker lists both parts.
    for method in ("saliency", "ig"):
        for shard, rows in ((0, [4, 4]), (1, [2, 0])):  # 10 images: shard 1 has 2 real rows
            marker = json.loads(store.shard_paths(tmp_path / "two", "cnn", method, shard)[2]
                                .read_text())  # fmt: skip
            assert [p["num_images"] for p in marker["parts"]] == rows
            assert [p["npy"]["name"] for p in marker["parts"]] == [
                f"shard_{shard:05d}.part000.npy",
                f"shard_{shard:05d}.part001.npy",
            ]
            part = np.load(store.shard_paths(tmp_path / "two", "cnn", method, shard, 1)[0])
            assert part.shape == (rows[1], 24, 24)
            np.testing.assert_array_equal(
                store.read_shard_attributions(tmp_path / "two", "cnn", method, shard),
                store.read_shard_attributions(tmp_path / "one", "cnn", method, shard),
            )


@pytest.mark.slow  # ~45 s wall: three sweep processes
def test_kill_and_resume(tmp_path):
    """SIGKILL mid-shard, restart: same table as an uninterrupted run, no shard done twice."""
    config = tiny_config(tmp_path / "out", methods=[{"name": "saliency"}],
                         data={"source": "groundtruth", "split": "eval", "num_images": 20,
                               "image_size": 24},
                         shard_size=4)  # fmt: skip
    path = write_config(tmp_path / "sweep.py", config)
    reference = write_config(tmp_path / "ref.py", {**config, "output_dir": str(tmp_path / "ref")})
    killed = launch(["tests/sweep/_kill_worker.py", str(path)], 4, {"KILL_AT": "8"})
    uninterrupted = launch(cli(reference), 4)
    killed.communicate(timeout=240)
    assert killed.returncode == -signal.SIGKILL
    npy, _, done = store.shard_paths(tmp_path / "out", "cnn", "saliency", 2)
    assert npy.exists() and not done.exists()  # the killed shard: a file, no marker
    assert [e["shard"] for e in store.computed_log(tmp_path / "out")] == [0, 1]
    assert not (tmp_path / "out" / "results.csv").exists()
    finish(launch(cli(path), 4))
    finish(uninterrupted)
    shards = sorted(e["shard"] for e in store.computed_log(tmp_path / "out"))
    assert shards == [0, 1, 2, 3, 4]  # each shard computed once
    table = (tmp_path / "out" / "results.csv").read_text()
    assert table == (tmp_path / "ref" / "results.csv").read_text()
    assert len(table.splitlines()) == 21
