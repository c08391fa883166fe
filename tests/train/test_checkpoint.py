"""Checkpointer / save_params: round trips, retention, and the errors users see."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fastxai_jax.train.checkpoint import Checkpointer, load_params, save_params
from fastxai_jax.train.loop import TrainState, init_state


def _state(width=3, seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "Dense_0": {
            "kernel": jnp.asarray(rng.normal(size=(2, width)), jnp.float32),
            "bias": jnp.zeros((width,)),
        },
        "scale": jnp.ones(()),
    }
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    return init_state(params, opt, extra={"key": jax.random.key(7), "count": jnp.asarray(5)})


def test_round_trip_into_template(tmp_path):
    state = _state()
    state = state._replace(step=jnp.asarray(11, jnp.int32))
    ckpt = Checkpointer(tmp_path / "run")
    ckpt.save(11, state, config={"lr": 0.1, "layers": [1, 2]})
    restored, config = Checkpointer(tmp_path / "run").restore(_state(seed=1))
    assert config == {"lr": 0.1, "layers": [1, 2]}
    assert isinstance(restored, TrainState)
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    assert int(restored.step) == 11
    np.testing.assert_array_equal(
        restored.params["Dense_0"]["kernel"], state.params["Dense_0"]["kernel"]
    )
    assert type(restored.opt_state[1][0]).__name__ == "ScaleByAdamState"
    np.testing.assert_array_equal(
        jax.random.key_data(restored.extra["key"]), jax.random.key_data(jax.random.key(7))
    )
    assert restored.params["scale"].dtype == np.float32


def test_latest_step_and_max_to_keep(tmp_path):
    ckpt = Checkpointer(tmp_path / "run", max_to_keep=2)
    assert ckpt.latest_step() is None
    for step in (1, 2, 3):
        ckpt.save(step, {"w": np.full((2,), step, np.float32)})
    assert ckpt.latest_step() == 3
    assert ckpt.all_steps() == [2, 3]
    old, _ = ckpt.restore({"w": np.zeros(2, np.float32)}, step=2)
    np.testing.assert_array_equal(old["w"], [2.0, 2.0])
    ckpt.close()


def test_missing_directory_and_step(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        Checkpointer(missing).restore({"w": np.zeros(2)})
    assert not missing.exists()
    ckpt = Checkpointer(tmp_path / "run")
    ckpt.save(1, {"w": np.zeros(2)})
    with pytest.raises(FileNotFoundError, match="step 5"):
        ckpt.restore({"w": np.zeros(2)}, step=5)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_params(missing)


def test_mismatched_template_names_key_and_shapes(tmp_path):
    ckpt = Checkpointer(tmp_path / "run")
    ckpt.save(1, _state(width=3))
    with pytest.raises(ValueError, match=r"params/Dense_0/bias.*\(3,\).*expected \(5,\)") as info:
        ckpt.restore(_state(width=5))
    assert str(tmp_path / "run" / "1") in str(info.value)
    with pytest.raises(ValueError, match="'other/w'.*missing"):
        ckpt.restore({"other": {"w": np.zeros(2)}})


def test_corrupt_checkpoint_names_the_file(tmp_path):
    ckpt = Checkpointer(tmp_path / "run")
    ckpt.save(1, {"w": np.arange(1000, dtype=np.float32)})
    step_dir = tmp_path / "run" / "1"
    for path in pathlib.Path(step_dir / "state").rglob("*"):
        if path.is_file() and path.name != "commit_success.txt":
            path.write_bytes(b"\x00garbage" + path.read_bytes()[:7])
    with pytest.raises(ValueError, match=str(step_dir)):
        Checkpointer(tmp_path / "run").restore({"w": np.zeros(1000, np.float32)})


def test_save_params_overwrites_and_loads_without_template(tmp_path):
    params = {"conv": {"kernel": np.ones((3, 3, 1, 2), np.float32)}}
    save_params(tmp_path / "w", params, {"acc": 0.9})
    save_params(
        tmp_path / "w", {"conv": {"kernel": 2 * np.ones((3, 3, 1, 2), np.float32)}}, {"acc": 0.95}
    )
    loaded, config = load_params(tmp_path / "w")
    assert config == {"acc": 0.95}
    np.testing.assert_array_equal(loaded["conv"]["kernel"], 2.0)
    typed, _ = load_params(tmp_path / "w", template=params)
    assert typed["conv"]["kernel"].shape == (3, 3, 1, 2)
    assert Checkpointer(tmp_path / "w").all_steps() == [1]


def test_config_must_be_json(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        Checkpointer(tmp_path / "run").save(0, {"w": np.zeros(1)}, config={"f": object()})


def _flip_largest(directory: pathlib.Path) -> pathlib.Path:
    largest = max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xFF
    largest.write_bytes(bytes(data))
    return largest


def test_flipped_bytes_are_refused_naming_the_file(tmp_path):
    """Issue 20: orbax returned NaN / 2.5e38 weights from a damaged file without error."""
    params = {"conv": {"kernel": np.linspace(-1, 1, 8192, dtype=np.float32).reshape(64, 128)}}
    save_params(tmp_path / "params", params, {"model": "x"})
    _flip_largest(tmp_path / "params")
    where = tmp_path.absolute() / "params" / "0" / "state"
    with pytest.raises(
        ValueError, match=f"checkpoint file {where} is corrupt: array 'conv/kernel'"
    ):
        load_params(tmp_path / "params")
    with pytest.raises(ValueError, match=f"checkpoint file {where} is corrupt"):
        load_params(tmp_path / "params", template=params)


def test_checkpoint_without_digests_still_loads(tmp_path):
    """Checkpoints written before the digests existed load (unverified)."""
    from fastxai_jax.train import checkpoint

    params = {"w": np.arange(6, dtype=np.float32)}
    original = checkpoint._digests
    checkpoint._digests = lambda nested: None
    try:
        save_params(tmp_path / "p", params)
    finally:
        checkpoint._digests = original
    loaded, _ = load_params(tmp_path / "p")
    np.testing.assert_array_equal(loaded["w"], params["w"])


def test_rewind_log_drops_recomputed_steps_and_returns_their_time(tmp_path):
    from fastxai_jax.train.checkpoint import log_seconds, rewind_log

    log = tmp_path / "log.jsonl"
    records = [{"step": s, "loss": 1.0, "time": 1.5 * (s + 1)} for s in range(5)]
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 5, "lo')
    assert rewind_log(log, 3) == 4.5  # the time of step 2, the last one kept
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [0, 1, 2]
    assert log_seconds(log) == 4.5
    assert rewind_log(tmp_path / "absent.jsonl", 0) == 0.0
