"""Learned-explainer training across hosts: runs.fit under jax.distributed.

Two local processes × two CPU devices (Gloo), each feeding only its own rows
of every batch (``process_local_batches``), train a tiny FEX to the same
params as one process × four devices; a two-process run stopped at step 2 and
restarted resumes from its orbax checkpoint to the same params too. The file is
also the worker: ``python test_multihost_fit.py WORKDIR STEPS [ADDRESS NPROC PID]``.

SGD, not Adam: Adam's first steps are ~lr·sign(g), so a 1e-9 reduction-order
difference in a near-zero gradient entry would become a 1e-3 parameter difference.
"""

import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SIZE, GLOBAL_BATCH = 24, 8


def _worker(workdir: str, num_steps: int, address=None, num_processes=None, process_id=None):
    import jax
    import optax

    from fastxai_jax.data.groundtruth import make_benchmark
    from fastxai_jax.explainers.learned import fex, runs
    from fastxai_jax.models import zoo
    from fastxai_jax.sweep.runner import initialize_distributed
    from fastxai_jax.train.sharding import global_mesh, process_rows

    if address is not None:
        initialize_distributed(True, address, num_processes, process_id, timeout_s=120)
    pool = make_benchmark(16, seed=5, image_size=SIZE)["images"].astype(np.float32)
    module, family = zoo.build("small_cnn", 8, widths=(8, 8))
    variables = zoo.random_variables(module, pool[:1], seed=0, train=False)
    apply_fn = zoo.make_apply_fn(module, family)
    config = fex.FexConfig(
        num_classes=8, image_size=SIZE, patch_size=8, hidden_size=16, depth=1, num_heads=2,
        mlp_dim=32, num_masks=2, explainer_family="half", target_family="half",
    )  # fmt: skip
    mesh = global_mesh()
    start, stop = process_rows(GLOBAL_BATCH, mesh)

    def batch_fn(step):  # this process reads only its rows of the step's global batch
        rows = (np.arange(GLOBAL_BATCH) + 3 * step) % len(pool)
        return {"images": pool[rows[start:stop]]}

    _, history = runs.fit(
        "fex", fex.make(config, apply_fn, variables), optax.sgd(0.5), batch_fn,
        sample_batch={"images": pool[:2]}, num_steps=num_steps, key=jax.random.key(1),
        workdir=workdir, checkpoint_every=1, mesh=mesh, progress=False,
        process_local_batches=True,
    )  # fmt: skip
    print("devices", jax.process_count(), jax.device_count(), flush=True)
    print("steps run", len(history), flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _launch(workdir, steps, num_devices, *distributed):
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}  # fmt: skip
    import os

    return subprocess.Popen(
        [sys.executable, __file__, str(workdir), str(steps), *map(str, distributed)],
        cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _two_processes(workdir, steps):
    address = f"localhost:{_free_port()}"
    return [_launch(workdir, steps, 2, address, 2, pid) for pid in range(2)]


def _finish(procs, timeout=400):
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, out[-3000:]
            outputs.append(out)
    finally:
        for proc in procs:
            proc.kill()
    return outputs


def _params(workdir):
    from fastxai_jax.train.checkpoint import load_params

    params, config = load_params(pathlib.Path(workdir) / "explainer")
    assert config["method"] == "fex"
    import jax

    return jax.tree_util.tree_flatten_with_path(params)[0]


def test_place_batch_on_one_process():
    """One process: the process-local batch is the global one; bad batches are refused."""
    import jax

    from fastxai_jax.train.sharding import data_mesh, place_batch

    mesh = data_mesh(8)
    batch = {"x": np.arange(16.0).reshape(8, 2), "y": np.arange(8)}
    for local in (False, True):
        placed = place_batch(batch, mesh, process_local=local)
        np.testing.assert_array_equal(np.asarray(placed["x"]), batch["x"])
        assert len(placed["x"].sharding.device_set) == 8 and placed["y"].shape == (8,)
    with pytest.raises(ValueError, match="different batch sizes"):
        place_batch({"x": np.zeros((8, 2)), "y": np.zeros(4)}, mesh)
    with pytest.raises(ValueError, match="not divisible by this process's 8 devices"):
        place_batch({"x": np.zeros((4, 2))}, mesh, process_local=True)
    with pytest.raises(ValueError, match="scalar"):
        place_batch({"x": np.float32(1.0)}, mesh)
    assert jax.process_count() == 1


@pytest.mark.slow  # ~4.5 min wall on 2 shared cores: seven worker processes compile FEX
def test_two_processes_fit_equals_one_process_and_resumes(tmp_path):
    reference = _launch(tmp_path / "one", 4, 4)
    fresh = _two_processes(tmp_path / "two", 4)
    first_half = _two_processes(tmp_path / "resumed", 2)
    outputs = _finish([reference, *fresh, *first_half])
    assert "devices 1 4" in outputs[0] and "devices 2 4" in outputs[1]
    steps = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert steps[-1] == "2"
    half = _params(tmp_path / "resumed")
    restarted = _finish(_two_processes(tmp_path / "resumed", 4))
    assert all("steps run 2" in out for out in restarted)  # resumed at step 2, not from 0
    log = (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 4  # one log (process 0), steps 0..3, none twice
    one, two, resumed = (_params(tmp_path / d) for d in ("one", "two", "resumed"))
    assert [p for p, _ in one] == [p for p, _ in two] == [p for p, _ in resumed]
    for (path, a), (_, b), (_, c) in zip(one, two, resumed, strict=True):
        # Gloo's cross-process all-reduce sums in another order than one process: 1e-6.
        np.testing.assert_allclose(b, a, atol=1e-6, rtol=1e-6, err_msg=str(path))
        np.testing.assert_array_equal(c, b, err_msg=str(path))  # resume is bit-exact
    # Steps 3-4 moved the params: the equalities are not between untrained copies.
    assert max(np.abs(a - h).max() for (_, a), (_, h) in zip(one, half, strict=True)) > 1e-5


if __name__ == "__main__":
    _args = sys.argv[1:]
    _worker(_args[0], int(_args[1]), *(_args[2:3]), *(int(a) for a in _args[3:5]))
