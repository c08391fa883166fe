"""Recipes of the benchmark scripts under ``experiments/`` (big_vision style)."""

from __future__ import annotations

from typing import Any

from fastxai_jax.configs import demo
from fastxai_jax.evaluation.protocol import Protocol
from fastxai_jax.substrate import Substrate, to_fill


def fex_vs_rise(family: str) -> dict[str, Any]:
    """FEX against RISE on 128 further held-out images, the demo's protocol.

    Command (after ``make demo``; about 6 minutes on 2 CPU cores, almost all RISE)::

      python experiments/fex_vs_rise.py --run-dir runs/demo --num-images 128

    Measured (README), FEX − RISE: deletion +0.001 [−0.001, +0.002], patch
    deletion +0.001 [−0.001, +0.003], insertion −0.004 [−0.008, −0.000],
    pointing 1.00 for both.

    Returns:
      ``{"protocol", "methods", "method_options", "num_images"}``.
    """
    return {
        "protocol": demo.protocol(family),
        "methods": ["rise", "random"],
        "method_options": {"rise": {"num_masks": 4000}},
        "num_images": 128,
    }


def bench_learned() -> dict[str, Any]:
    """DAX, LTX, TVE and FastSHAP on the embedded benchmark: the script's defaults.

    Command (2 CPU cores, ~25 min)::

      python experiments/benchmarks/bench_learned.py --target-dir runs/target \\
          --num-train 2048 --methods ltx,tve,fastshap --out bench_learned.json

    Measured (README; deletion AUC / pointing game, random map 0.199 / 0.09): LTX
    stage A 0.152 / 0.56 (47 s), TVE on the target's head 0.150 / 0.50 (118 s),
    FastSHAP 0.140 / 0.72 (399 s), DAX 0.171 / 0.44 (1000 queries / image).
    """
    return {
        "num_train": 512, "num_test": 32, "steps": 300, "ltx_lam": 2.0,
        "dax_samples": 256, "dax_epochs": 6, "dax_complement": "frozen",
        "dax_fill": to_fill(demo.BLACK, "pixel"),
        "backbone": "target", "tve_head_init": "local", "tve_steps": 1000, "tve_lr": 3e-3,
        "fastshap_steps": 900, "fastshap_lr": 3e-3,
        "fastshap_fill": to_fill(demo.BLACK, "normalised", "half"), "tve_cells": 1,
        "snapshot_every": 100, "train_seed": 101, "test_seed": 202,
    }  # fmt: skip


def bench_learned_dax(num_samples: int, epochs: int, complement: str, fill: Any) -> dict[str, Any]:
    """DAX options in ``bench_learned.py``: the demo's recipe with the run's budget
    (``batching`` left to the caller, which times it)."""
    options = {k: v for k, v in demo.dax_recipe().items() if k != "batching"}
    options.update(
        num_samples=num_samples, epochs=epochs, snapshot_epochs=epochs, chunk=256,
        complement_trains_student=complement == "train", fill=fill,
    )  # fmt: skip
    return options


def bench_fex(num_classes: int, family: str) -> Any:
    """The FEX timed by ``experiments/benchmarks/bench_fex.py`` (its cost does not depend
    on the weights): ``fex_benchmark.benchmark_config`` at the benchmark size.

    Command::

      python experiments/benchmarks/bench_fex.py --num-images 32 --out bench_fex.json

    Measured (README): FEX 3.3 ms vs RISE-4000 2879 ms per image (864×), 95% less memory.
    """
    from fastxai_jax.explainers.learned import fex_benchmark

    return fex_benchmark.benchmark_config(num_classes, target_family=family)


def bench_insertion() -> Protocol:
    """RISE's protocol timed by ``experiments/benchmarks/bench_insertion.py``: insertion
    on blur, deletion on black (the step size is the image side, 224 steps on 224²).

    Command (small CPU run)::

      JAX_PLATFORMS=cpu python experiments/benchmarks/bench_insertion.py \\
          --num 2 --image-size 32 --out runs/bench_insertion_cpu.json
    """
    return Protocol(insertion_substrate=Substrate("blur"), deletion_substrate=Substrate())
