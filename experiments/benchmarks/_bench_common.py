"""Helpers shared by the benchmark scripts (``bench_fex``, ``bench_learned``).

Imported as ``_bench_common`` from the scripts' own folder (each script puts
that folder on ``sys.path``, so it also works when a test loads the script by
path).
"""

from __future__ import annotations

import jax


def peak_bytes(fn, *args) -> int | None:
    """XLA's compiled memory estimate of ``jax.jit(fn)(*args)``: arguments + outputs +
    temporaries, in bytes; ``None`` where the backend does not report it."""
    try:
        stats = jax.jit(fn).lower(*args).compile().memory_analysis()
    except Exception:  # not every backend reports it
        return None
    if stats is None:
        return None
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes)
