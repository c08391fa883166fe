"""Cost figures of an explainer run (SPEC §7): time per input, peak memory, queries.

Peak memory is the device allocator's ``peak_bytes_in_use``
(``jax.Device.memory_stats()``, available on GPU/TPU) and otherwise the
process's peak resident set size (``resource.getrusage``; on CPU this is a
high-water mark of the whole process, not of one call). Model queries come
from the method registry (``registry.method_cost``): forward and backward
passes per input, static for every method.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax


class CostRecord(NamedTuple):
    """Cost of explaining ``num_inputs`` inputs with one method.

    Attributes:
      method: method name (or a label).
      num_inputs: inputs explained in the timed call.
      time_per_input_s: wall time per input of the timed call (compilation excluded
        when ``warmup`` was used), seconds.
      peak_memory_bytes: peak device memory (or process RSS) in bytes.
      memory_source: ``"device"`` or ``"ru_maxrss"``.
      forward_passes: target-model forward passes per input (-1 if unknown).
      backward_passes: target-model backward passes per input (-1 if unknown).
    """

    method: str
    num_inputs: int
    time_per_input_s: float
    peak_memory_bytes: int
    memory_source: str
    forward_passes: int
    backward_passes: int

    @property
    def model_queries(self) -> int:
        """Forward plus backward passes per input (-1 if unknown)."""
        if self.forward_passes < 0 or self.backward_passes < 0:
            return -1
        return self.forward_passes + self.backward_passes


def peak_memory() -> tuple[int, str]:
    """``(bytes, source)``: device allocator peak where reported, else process peak RSS."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats raise various errors
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports kilobytes
    return int(rss) * scale, "ru_maxrss"


def measure_cost(
    fn: Callable[[], Any],
    *,
    num_inputs: int,
    method: str = "",
    options: dict[str, Any] | None = None,
    warmup: bool = True,
) -> tuple[Any, CostRecord]:
    """Times ``fn()`` (blocking on its result) and records memory and model queries.

    Args:
      fn: a thunk computing the attributions, e.g. ``lambda: attribute(...)``.
      num_inputs: inputs ``fn`` explains (divides the wall time).
      method: registered method name; its cost is looked up with ``options``.
      options: the method's options for ``registry.method_cost``.
      warmup: call ``fn`` once first so compilation is not timed.

    Returns:
      ``(result of fn, CostRecord)``.
    """
    if int(num_inputs) < 1:
        raise ValueError(f"num_inputs must be a positive int; got {num_inputs}")
    if warmup:
        jax.block_until_ready(fn())
    start = time.perf_counter()
    result = jax.block_until_ready(fn())
    elapsed = time.perf_counter() - start
    memory, source = peak_memory()
    forward, backward = -1, -1
    if method:
        from fastxai_jax.explainers import registry

        try:
            cost = registry.method_cost(method, **(options or {}))
            forward, backward = int(cost.forward), int(cost.backward)
        except (ValueError, TypeError):
            pass
    record = CostRecord(
        method, int(num_inputs), elapsed / int(num_inputs), memory, source, forward, backward
    )
    return result, record
