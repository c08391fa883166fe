"""The one adapter between the evaluation and the learned explainers.

Trains (or reloads) a learned explainer through the ``train-explainer`` verb's
code path (:func:`fastxai_jax.cli.train_explainer.train`, which reads the method
table) and loads it with :func:`fastxai_jax.explainers.learned.runs.load`; the
target queries per explanation come from the table
(``registry.LEARNED_METHODS[name].target_queries_per_explain``).
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastxai_jax.core import Cost
from fastxai_jax.explainers import registry


def declared_cost(name: str) -> Cost:
    """The declared per-input target cost of learned explainer ``name``: its table
    entry's target queries per explain (TVE: 1, its encoder; ``Cost(-1, -1)``,
    unknown, for a name not in the table)."""
    spec = registry.LEARNED_METHODS.get(name)
    return Cost(-1, -1) if spec is None else Cost(int(spec.target_queries_per_explain), 0)


def train_or_load(
    name: str,
    target: tuple[Any, Any, str, Callable[..., Any]],
    run_dir: pathlib.Path,
    *,
    recipe: Sequence[str],
    seed: int,
    target_workdir: pathlib.Path,
    progress: bool,
) -> tuple[Callable[..., Any], float]:
    """Trains (or reloads) one learned explainer with a recipe's command-line options.

    Args:
      name: ``fex``, ``ltx``, ``tve`` or ``fastshap``.
      target: ``(module, variables, family, apply_fn)`` of the target.
      run_dir: the explainer's directory (reused if it holds a trained explainer).
      recipe: ``train-explainer`` options (see :mod:`fastxai_jax.configs.demo`).
      seed: training seed.
      target_workdir: the target's directory.
      progress: show progress bars.

    Returns:
      ``(explain(x, target) -> [B, H, W], train_seconds)``. FEX explains the class
      asked for; LTX, TVE and FastSHAP their own choice (as the demo always did).
    """
    from fastxai_jax.cli import build_parser, train_explainer
    from fastxai_jax.explainers.learned import runs

    argv = ["train-explainer", "--method", name, "--workdir", str(run_dir)]
    argv += ["--target-workdir", str(target_workdir), "--seed", str(seed), *recipe]
    if not progress:
        argv.append("--no-progress")
    train_args = build_parser().parse_args(argv)
    start = time.perf_counter()
    if not (run_dir / "explainer").exists():
        train_explainer.train(name, train_args, target)
    seconds = time.perf_counter() - start
    module, variables, _, apply_fn = target
    trained = runs.load(run_dir, apply_fn=apply_fn, target_params=variables, module=module)
    if name == "fex":
        return (lambda x, t: trained.explain(x, t)), seconds
    return (lambda x, t: trained.explain(x)), seconds
