"""Shared check of the explainer tests: jitted output == eager, one trace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import numpy as np


def assert_jit_matches_eager(
    explain_fn: Callable[[Any, Any, Any], Any], params, x, target, *, rtol: float, atol: float
):
    """``explain_fn(params, x, target)`` under ``jax.disable_jit()`` equals its
    ``jax.jit`` form, which may be traced once only (``chex.assert_max_traces``).

    Returns:
      ``(jitted_fn, jitted_output)``; calling ``jitted_fn`` again with new
      values of the same shapes fails if it re-traces.
    """
    with jax.disable_jit():
        eager = explain_fn(params, x, target)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def explain(p, xs, t):
        return explain_fn(p, xs, t)

    jitted = explain(params, x, target)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=rtol, atol=atol)
    return explain, jitted
