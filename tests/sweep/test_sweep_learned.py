"""Learned explainers in the sweep: loaded with runs.load from the config's
``explainer`` workdir, params passed through the step (one compile), sharded ==
single device, and the sweep's rows == direct library calls."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _sweep_helpers import tiny_cnn, tiny_config
from jax.sharding import Mesh

import fastxai_jax as fx
from fastxai_jax.data.groundtruth import EVAL_SEED, make_benchmark
from fastxai_jax.explainers.learned import fastshap, fex, runs
from fastxai_jax.sweep.step import make_step, method_key

SIZE = 24


CONFIG = fex.FexConfig(
    num_classes=8, image_size=SIZE, patch_size=8, hidden_size=16, depth=1, num_heads=2,
    mlp_dim=32, num_masks=2, explainer_family="half", target_family="half",
)  # fmt: skip


@pytest.fixture(scope="module")
def fex_run(tmp_path_factory):
    """A tiny FEX at its seeded init, saved with runs.save (no training: fast)."""
    images = jnp.asarray(make_benchmark(8, seed=EVAL_SEED, image_size=SIZE)["images"])
    apply_fn, variables, _ = tiny_cnn(images)
    workdir = tmp_path_factory.mktemp("fex")
    params = fex.init_params(CONFIG, jax.random.key(0))
    runs.save(workdir, runs.Trained("fex", fex.make(CONFIG, None, None), params, 8))
    return workdir, images, apply_fn, variables


@pytest.fixture(scope="module")
def fex_trained(tmp_path_factory):
    """A tiny FEX trained by runs.fit for 3 steps against the tiny sweep's small CNN."""
    images = jnp.asarray(make_benchmark(8, seed=EVAL_SEED, image_size=SIZE)["images"])
    apply_fn, variables, _ = tiny_cnn(images)
    learned = fex.make(CONFIG, apply_fn, variables)
    workdir = tmp_path_factory.mktemp("fex_trained")
    runs.fit(
        "fex", learned, optax.adam(1e-2), lambda step: {"images": images[:4]},
        sample_batch={"images": images[:4]}, num_steps=3, key=jax.random.key(0),
        workdir=workdir, progress=False,
    )  # fmt: skip
    return workdir, images, apply_fn, variables


def _counting(explainer, traces):
    """``explainer`` whose ``explain`` appends to ``traces`` each time it is traced."""

    def explain(*args, **kwargs):
        traces.append(1)
        return explainer.explain(*args, **kwargs)

    return explainer._replace(explain=explain)


def _assert_sharded_equals_single_device(method, workdir, images, apply_fn, variables):
    trained = runs.load(workdir, apply_fn=apply_fn, target_params=variables, method=method)
    labels, index = jnp.zeros(8, jnp.int32), jnp.arange(8, dtype=jnp.int32)
    metrics = [("insertion_deletion", {"step_size": 48})]
    outputs = {}
    for devices in (1, 8):
        mesh = Mesh(np.asarray(jax.devices()[:devices]), ("data",))
        # Count the step's traces directly (its body calls explain once per trace;
        # the jit's C++ cache size can read 0 late in a full run).
        traces = []
        counted = _counting(trained.explainer, traces)
        step = make_step(apply_fn, method, {}, metrics, mesh, explainer=counted)
        params = (variables, trained.params)
        outputs[devices] = step(params, images, labels, index, method_key(0, method))
        # Other explainer weights: same compiled program (params are traced, not static).
        other = jax.tree.map(lambda p: p * 0.5, trained.params)
        step((variables, other), images, labels, index, method_key(0, method))
        assert len(traces) == 1
    (single, single_cols), (sharded, sharded_cols) = outputs[1], outputs[8]
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), atol=1e-5, rtol=1e-5)
    for name in ("insertion_auc", "deletion_auc", "target"):
        np.testing.assert_allclose(sharded_cols[name], single_cols[name], atol=1e-5)
    target = np.asarray(jnp.argmax(apply_fn(variables, images), axis=-1))
    np.testing.assert_array_equal(single_cols["target"], target)
    direct = trained.explain(images, target)  # the map of the class ŷ the step chose
    np.testing.assert_allclose(np.asarray(single), np.asarray(direct), atol=1e-5, rtol=1e-5)
    assert np.asarray(single).std() > 0 and np.abs(single[0] - single[1]).max() > 0


def test_fex_step_sharded_equals_single_device_and_compiles_once(fex_run):
    _assert_sharded_equals_single_device("fex", *fex_run)


def test_fastshap_step_sharded_equals_single_device(fex_run, tmp_path):
    _, images, apply_fn, variables = fex_run
    config = fastshap.FastShapConfig(
        num_classes=8, image_size=SIZE, patch_size=8, hidden_size=16, depth=1, num_heads=2,
        mlp_dim=32, num_samples=4, explainer_family="half", target_family="half",
    )  # fmt: skip
    learned = fastshap.make(config, apply_fn, variables)
    params = learned.init_params(jax.random.key(0), {"images": images[:2]})
    runs.save(tmp_path / "fastshap", runs.Trained("fastshap", learned, params, 8))
    _assert_sharded_equals_single_device(
        "fastshap", tmp_path / "fastshap", images, apply_fn, variables
    )


@pytest.mark.slow  # ~60 s on 2 shared cores: runs.fit compiles FEX's update, then the sweep
def test_sweep_runs_fex_and_matches_library_calls(fex_trained, tmp_path):
    workdir, _, _, _ = fex_trained
    methods = [{"name": "saliency"}, {"name": "fex", "explainer": str(workdir)}]
    config = tiny_config(tmp_path / "out", methods=methods)
    config["data"] = {**config["data"], "num_images": 8}
    table = fx.sweep.run(config, progress=False)["table"]
    rows = [r for r in table["rows"] if r["method"] == "fex"]
    assert [r["index"] for r in rows] == list(range(8))
    images = jnp.asarray(make_benchmark(8, seed=EVAL_SEED, image_size=SIZE)["images"])
    apply_fn, variables, _ = tiny_cnn(images)
    trained = runs.load(workdir, apply_fn=apply_fn, target_params=variables)
    target = np.asarray(jnp.argmax(apply_fn(variables, images), axis=-1))
    maps = trained.explain(images, target)
    curves = fx.insertion_deletion(apply_fn, variables, images, maps, target, step_size=48)
    np.testing.assert_allclose([r["insertion_auc"] for r in rows], curves["insertion"].auc,
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose([r["deletion_auc"] for r in rows], curves["deletion"].auc,
                               atol=1e-5)  # fmt: skip
    saved = fx.sweep.store.read_shard_attributions(tmp_path / "out", "cnn", "fex", 0)
    np.testing.assert_allclose(saved, np.asarray(maps), atol=1e-5, rtol=1e-5)


def test_wrong_explainer_is_refused_before_compute(fex_run, tmp_path):
    workdir, _, _, _ = fex_run
    cases = [
        ([{"name": "ltx", "explainer": str(workdir)}], {}, r"methods\[0\].explainer: .*fex"),
        ([{"name": "fex", "explainer": str(workdir)}],
         {"num_classes": 10}, r"methods\[0\].explainer: .*8 classes"),
        ([{"name": "fex", "explainer": str(tmp_path / "none")}], {},
         r"methods\[0\].explainer: no trained explainer"),
    ]  # fmt: skip
    for i, (methods, model_change, pattern) in enumerate(cases):
        config = tiny_config(tmp_path / f"out{i}", methods=methods)
        config["models"] = [{**config["models"][0], **model_change}]
        with pytest.raises(ValueError, match=pattern):
            fx.sweep.run(config, progress=False)
        assert not (tmp_path / f"out{i}").exists()
    with pytest.raises(ValueError, match=r"methods\[0\].explainer: learned method 'fex' needs"):
        fx.sweep.validate_config(tiny_config(tmp_path / "x", methods=[{"name": "fex"}]))


@pytest.mark.slow  # ~25 s wall (+10 s fixture): three sweep processes compile FEX explain
def test_two_processes_with_fex_equal_one_process(fex_run, tmp_path):
    """2 processes × 2 devices load the explainer and give 1 process × 4 devices' table."""
    import socket

    from _sweep_helpers import cli, finish, launch, write_config

    workdir = fex_run[0]
    methods = [{"name": "fex", "explainer": str(workdir)}]
    paths = {n: write_config(tmp_path / f"{n}.py", tiny_config(tmp_path / n, methods=methods))
             for n in ("one", "two")}  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        address = f"localhost:{sock.getsockname()[1]}"
    distributed = ("--coordinator", address, "--num-processes", "2", "--process-id")
    procs = [launch(cli(paths["two"], *distributed, str(i)), 2) for i in range(2)]
    procs.append(launch(cli(paths["one"]), 4))
    try:
        for proc in procs:
            finish(proc)
    finally:
        for proc in procs:
            proc.kill()
    merged = (tmp_path / "two" / "results.csv").read_text()
    assert merged == (tmp_path / "one" / "results.csv").read_text()
    assert len(merged.splitlines()) == 1 + 10
    for shard in (0, 1):
        np.testing.assert_array_equal(
            fx.sweep.store.read_shard_attributions(tmp_path / "two", "cnn", "fex", shard),
            fx.sweep.store.read_shard_attributions(tmp_path / "one", "cnn", "fex", shard),
        )
