"""``fastxai explain`` and the overlay writer, on tiny inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastxai_jax import viz
from fastxai_jax.cli import explain as explain_cli
from fastxai_jax.cli import main


def test_overlay_values_and_png(tmp_path):
    image = np.zeros((4, 4, 3), np.float32)
    attribution = np.arange(16, dtype=np.float32).reshape(4, 4)
    blended = viz.overlay(image, attribution, alpha=1.0, cmap="gray")
    np.testing.assert_allclose(blended[..., 0], attribution / 15.0, atol=1e-2)
    half = viz.overlay(np.ones((4, 4, 3)), np.zeros((2, 2)), alpha=0.5, cmap="gray")
    np.testing.assert_allclose(half, 0.5, atol=1e-6)  # flat map → colour 0, resized to 4x4
    path = viz.save_overlay(tmp_path / "a" / "o.png", image, attribution, title="t")
    assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="attribution"):
        viz.overlay(image, np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="image"):
        viz.overlay(np.zeros((4, 4, 5)), attribution)


def test_explain_cli_writes_maps(tmp_path):
    out = tmp_path / "run"
    argv = ["explain", "--method", "saliency", "--model", "small_cnn", "--untrained"]
    argv += ["--dataset", "groundtruth", "--num", "3", "--image-size", "24"]
    argv += ["--batch-size", "3", "--out", str(out)]
    assert main(argv) == 0
    maps = np.load(out / "attributions.npy")
    assert maps.shape == (3, 24, 24) and np.all(maps >= 0)
    assert (out / "groundtruth_0002.npy").exists() and (out / "groundtruth_0002.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cost_per_input"] == {"forward": 1, "backward": 1}
    assert (
        main(
            [
                "explain",
                "--method",
                "nope",
                "--model",
                "small_cnn",
                "--untrained",
                "--dataset",
                "groundtruth",
                "--num",
                "1",
                "--image-size",
                "16",
                "--out",
                str(out),
            ]
        )
        == 2
    )


def test_learned_hook_and_options(tmp_path):
    # a user's learned method, added to the one table explicitly, runs through the CLI
    import dataclasses

    import jax.numpy as jnp

    from fastxai_jax.core import LearnedExplainer
    from fastxai_jax.explainers import registry
    from fastxai_jax.explainers.learned import runs

    @dataclasses.dataclass(frozen=True)
    class ScaleConfig:
        scale: float = 1.0

    def make(config, apply_fn, target_params, *, module=None):
        return LearnedExplainer(
            config,
            lambda key, batch: {"w": jnp.full((1,), config.scale)},
            lambda params, batch, key: (jnp.zeros(()), {}),
            lambda params, x, target=None: jnp.ones(x.shape[:3]) * params["w"][0],
        )

    registry.register_learned("unit_test_learned", ScaleConfig, make)
    try:
        learned = make(ScaleConfig(2.0), None, None)
        trained = runs.Trained("unit_test_learned", learned, {"w": jnp.full((1,), 2.0)}, None)
        runs.save(tmp_path / "ckpt", trained)
        out = tmp_path / "learned"
        argv = ["explain", "--method", "unit_test_learned", "--model", "small_cnn", "--untrained"]
        argv += ["--dataset", "groundtruth", "--num", "2", "--image-size", "24", "--no-png"]
        assert main(argv + ["--out", str(out), "--explainer-ckpt", str(tmp_path / "ckpt")]) == 0
        np.testing.assert_array_equal(np.load(out / "attributions.npy"), 2.0)
        assert main(argv + ["--out", str(out)]) == 2  # no checkpoint given
    finally:
        registry.LEARNED_METHODS.pop("unit_test_learned")
    assert explain_cli.parse_options(["num_steps=8", "method=riemann_left", "b=[1, 2]"]) == {
        "num_steps": 8,
        "method": "riemann_left",
        "b": (1, 2),
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        explain_cli.parse_options(["oops"])
