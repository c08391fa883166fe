"""The shared training loop: resume, data parallelism, NaN guard, logging, optimisers."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fastxai_jax.train.loop import TrainState, fit, init_state, make_optimizer
from fastxai_jax.train.sharding import data_mesh

_W_TRUE = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(4, 3)


def _batch_fn(step, batch_size=16):
    rng = np.random.default_rng(step)
    x = rng.normal(size=(batch_size, 4)).astype(np.float32)
    return {"x": x, "y": x @ _W_TRUE}


def _init(optimizer):
    params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros((3,))}
    return init_state(params, optimizer, extra={"noise": jnp.zeros(())})


def _make_update(optimizer, noise_scale=0.01):
    def update(state, batch, key):
        def loss_fn(params):
            noise = noise_scale * jax.random.normal(key, batch["y"].shape)
            pred = batch["x"] @ params["w"] + params["b"][None, :]
            return jnp.mean((pred - batch["y"] - noise) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        extra = {"noise": state.extra["noise"] + 1.0}
        return state._replace(params=params, opt_state=opt_state, extra=extra), {"loss": loss}

    return update


def _fit(optimizer, update, num_steps, key, batch_fn=_batch_fn, **options):
    """``fit`` from a fresh :func:`_init` state, without a progress bar."""
    state = _init(optimizer)
    return fit(state, update, batch_fn, num_steps=num_steps, key=key, progress=False, **options)


def test_fit_learns_and_counts_steps(key, tmp_path):
    opt = make_optimizer("adam", 0.05)
    state, history = _fit(opt, _make_update(opt), 60, key, log_path=tmp_path / "log.jsonl")
    assert int(state.step) == 60
    assert float(state.extra["noise"]) == 60.0
    assert [h["step"] for h in history] == list(range(60))
    assert history[-1]["loss"] < 0.05 * history[0]["loss"]
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 60 and lines[3]["loss"] == pytest.approx(history[3]["loss"])
    assert "time" in lines[0]


def test_caller_state_not_donated(key):
    opt = make_optimizer("sgd", 0.1)
    state0 = _init(opt)
    fit(state0, _make_update(opt), _batch_fn, num_steps=2, key=key, progress=False)
    # The caller's state is still usable (was copied, not donated).
    assert float(jnp.sum(state0.params["w"])) == 0.0


def test_resume_equals_uninterrupted(key, tmp_path):
    opt = make_optimizer("adam", 0.02, warmup_frac=0.1, total_steps=20)
    update = _make_update(opt)
    full, full_hist = _fit(opt, update, 20, key)
    ckpt = tmp_path / "ckpt"
    config = {"lr": 0.02}
    half, _ = _fit(opt, update, 10, key, checkpoint_dir=ckpt, checkpoint_every=4, config=config)
    assert int(half.step) == 10
    # A fresh call (as after a crash) resumes from step 10 on its own.
    resumed, hist = _fit(
        opt, update, 20, key, checkpoint_dir=ckpt, checkpoint_every=4, config=config
    )
    assert [h["step"] for h in hist] == list(range(10, 20))
    assert int(resumed.step) == 20
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(full), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    np.testing.assert_allclose(hist[-1]["loss"], full_hist[-1]["loss"], rtol=1e-6)
    with pytest.raises(ValueError, match="differs from config"):
        _fit(opt, update, 20, key, checkpoint_dir=ckpt, config={"lr": 0.5})


def test_data_parallel_matches_single_device(key):
    assert jax.device_count() >= 8
    opt = make_optimizer("sgd", 0.05, momentum=0.9)
    update = _make_update(opt)
    single, hist1 = _fit(opt, update, 15, key)
    mesh = data_mesh(8)
    sharded, hist8 = _fit(opt, update, 15, key, mesh=mesh)
    np.testing.assert_allclose(
        [h["loss"] for h in hist8], [h["loss"] for h in hist1], rtol=1e-5, atol=1e-6
    )
    assert len(sharded.params["w"].sharding.device_set) == 8
    np.testing.assert_allclose(sharded.params["w"], single.params["w"], atol=1e-5)


def test_nan_loss_raises_and_params_stay_finite(key, tmp_path):
    opt = make_optimizer("sgd", 0.1)
    good = _make_update(opt)

    def update(state, batch, key):
        new_state, metrics = good(state, batch, key)
        poison = jnp.where(state.step >= 3, jnp.nan, 0.0)
        new_state = new_state._replace(params=jax.tree.map(lambda p: p + poison, new_state.params))
        return new_state, {"loss": metrics["loss"] + poison}

    with pytest.raises(FloatingPointError, match="step 3") as info:
        _fit(opt, update, 10, key, checkpoint_dir=tmp_path / "c", checkpoint_every=2)
    kept = info.value.state
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(kept.params))
    assert int(kept.step) == 3
    assert float(jnp.abs(kept.params["w"]).sum()) > 0


def test_fit_rejects_bad_arguments(key):
    opt = make_optimizer()
    with pytest.raises(ValueError, match="num_steps"):
        fit(_init(opt), _make_update(opt), _batch_fn, num_steps=-1, key=key)
    with pytest.raises(ValueError, match="TrainState"):
        fit({"params": 1}, _make_update(opt), _batch_fn, num_steps=1, key=key)


def test_make_optimizer_schedules():
    params = {"w": jnp.ones(())}
    opt = make_optimizer("sgd", 1.0, warmup_frac=0.5, total_steps=4, schedule="constant")
    opt_state = opt.init(params)
    steps = []
    for _ in range(5):
        updates, opt_state = opt.update({"w": jnp.ones(())}, opt_state)
        steps.append(-float(updates["w"]))
    np.testing.assert_allclose(steps, [0.0, 0.5, 1.0, 1.0, 1.0], atol=1e-6)
    cosine = make_optimizer("sgd", 1.0, total_steps=4)
    opt_state = cosine.init(params)
    seen = []
    for _ in range(3):
        updates, opt_state = cosine.update({"w": jnp.ones(())}, opt_state)
        seen.append(-float(updates["w"]))
    np.testing.assert_allclose(seen, [1.0, 0.5 * (1 + np.cos(np.pi / 4)), 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="name"):
        make_optimizer("rmsprop")
    with pytest.raises(ValueError, match="total_steps"):
        make_optimizer("adam", 1e-3, warmup_frac=0.1)
    assert isinstance(TrainState(0, {}, ()), tuple)


def test_keyboard_interrupt_saves_and_resumes(key, tmp_path):
    opt = make_optimizer("adam", 0.02)
    update = _make_update(opt)
    full, _ = _fit(opt, update, 12, key)

    def interrupted_batch_fn(step):
        if step == 7:
            raise KeyboardInterrupt
        return _batch_fn(step)

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        _fit(
            opt,
            update,
            12,
            key,
            batch_fn=interrupted_batch_fn,
            checkpoint_dir=ckpt,
            checkpoint_every=5,
        )
    from fastxai_jax.train.checkpoint import Checkpointer

    assert Checkpointer(ckpt).all_steps() == [5, 7]
    resumed, hist = _fit(opt, update, 12, key, checkpoint_dir=ckpt, checkpoint_every=5)
    assert hist[0]["step"] == 7
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(full), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


def test_resume_after_records_past_the_checkpoint_logs_each_step_once(key, tmp_path):
    """Issue 20: a run killed after step 3 but checkpointed at 2 logged 2 and 3 twice."""
    import shutil

    opt = make_optimizer("adam", 0.02)
    update = _make_update(opt)
    run = dict(key=key, progress=False, checkpoint_every=2, checkpoint_dir=tmp_path / "ckpt")
    log = tmp_path / "log.jsonl"
    fit(_init(opt), update, _batch_fn, num_steps=4, log_path=log, **run)
    shutil.rmtree(tmp_path / "ckpt" / "4")  # as if killed while saving step 4
    first = [json.loads(line) for line in log.read_text().splitlines()]
    state, history = fit(_init(opt), update, _batch_fn, num_steps=6, log_path=log, **run)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(6))
    assert [h["step"] for h in history] == [2, 3, 4, 5]
    assert records[:2] == first[:2]
    times = [r["time"] for r in records]
    assert times == sorted(times) and times[2] > first[1]["time"]  # one clock for the run
    full, _ = _fit(opt, update, 6, key)
    np.testing.assert_array_equal(np.asarray(state.params["w"]), np.asarray(full.params["w"]))
