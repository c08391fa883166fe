"""Shared pieces of the sweep tests: a tiny config and its model, a subprocess launcher
and a fixture-maker that refuses compute."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def tiny_config(output_dir, **overrides) -> dict:
    """Small CNN on 10 benchmark images of 24², 2 shards of 8 (the last padded)."""
    config = {
        "name": "tiny",
        "models": [{"name": "small_cnn", "num_classes": 8, "weights": "random:0",
                    "options": {"widths": [8, 8]}, "label": "cnn"}],
        "data": {"source": "groundtruth", "split": "eval", "num_images": 10, "image_size": 24},
        "methods": [{"name": "saliency"}, {"name": "ig", "options": {"num_steps": 4}}],
        "metrics": [{"name": "insertion_deletion", "options": {"step_size": 48}}],
        "shard_size": 8,
        "output_dir": str(output_dir),
    }  # fmt: skip
    config.update(overrides)
    return config


def tiny_cnn(images, seed: int = 0):
    """``(apply_fn, variables, module)`` of the tiny configs' model: small_cnn with 8
    classes, widths (8, 8) and ``random:SEED`` weights (initialised on ``images[:1]``)."""
    from fastxai_jax.models import zoo

    module, family = zoo.build("small_cnn", 8, widths=(8, 8))
    variables = zoo.random_variables(module, images[:1], seed=seed, train=False)
    return zoo.make_apply_fn(module, family), variables, module


def write_config(path, config) -> pathlib.Path:
    """Writes ``config`` as a big_vision-style ``.py`` config file."""
    path = pathlib.Path(path)
    text = json.dumps(json.dumps(config))
    path.write_text(f"import json\n\n\ndef get_config():\n    return json.loads({text})\n")
    return path


def launch(args, num_devices, extra_env=None) -> subprocess.Popen:
    """Starts ``python ARGS`` with ``num_devices`` simulated CPU devices."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO), **(extra_env or {})}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def cli(config_path, *extra) -> list[str]:
    entry = "from fastxai_jax.cli import main; raise SystemExit(main())"
    return ["-c", entry, "sweep", str(config_path), "--no-progress", *extra]


def finish(proc, timeout=240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out
