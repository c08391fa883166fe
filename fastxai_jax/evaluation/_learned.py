"""The one adapter between the evaluation and the learned explainers.

Trains (or reloads) a learned explainer and declares its target queries per
explanation. It calls the existing ``train-explainer`` / ``explain`` tables
(``fastxai_jax.cli.train_explainer.METHODS``, ``fastxai_jax.cli.explain._LEARNED``)
until the learned explainers' own table (``explainers.registry``, learned
entries with fit / save / load and queries per explain) replaces them: re-point
:func:`train_or_load` and :func:`declared_cost` there, nothing else.
"""

from __future__ import annotations

import inspect
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastxai_jax.core import Cost

# Target-model passes per input spent by each learned explainer's explain: FEX, LTX
# (stage A) and FastSHAP read their own network only; TVE's explain runs the target's
# encoder once (its pooled features pick the head's class).
DECLARED_COSTS: dict[str, Cost] = {
    "fex": Cost(0, 0),
    "ltx": Cost(0, 0),
    "fastshap": Cost(0, 0),
    "tve": Cost(1, 0),
}


def declared_cost(name: str) -> Cost:
    """The declared per-input target cost of learned explainer ``name`` (``Cost(-1, -1)``,
    unknown, for a name not in the table)."""
    return DECLARED_COSTS.get(name, Cost(-1, -1))


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
      ``(explain(x, target) -> [B, H, W], train_seconds)``.
    """
    from fastxai_jax.cli import build_parser, train_explainer
    from fastxai_jax.cli import explain as explain_cli

    argv = ["train-explainer", "--method", name, "--workdir", str(run_dir)]
    argv += ["--target-workdir", str(target_workdir), "--seed", str(seed), *recipe]
    if not progress:
        argv.append("--no-progress")
    train_args = build_parser().parse_args(argv)
    start = time.perf_counter()
    if not (run_dir / "explainer").exists():
        train_explainer.METHODS[name].train(train_args, target)
    seconds = time.perf_counter() - start
    module, variables, family, apply_fn = target
    loaded = explain_cli._LEARNED[name](
        str(run_dir),
        module=module,
        variables=variables,
        family=family,
        apply_fn=apply_fn,
        options={},
    )
    takes_target = len(inspect.signature(loaded).parameters) >= 2
    explain = (lambda x, t: loaded(x, t)) if takes_target else (lambda x, t: loaded(x))
    return explain, seconds
