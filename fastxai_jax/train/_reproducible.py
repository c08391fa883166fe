"""Compiler options that make CPU training independent of the core count (issue 17).

XLA:CPU in jaxlib 0.10 hands reductions (a bias gradient, a global average pool)
to YNNPACK, which splits each sum over its intra-op threads and then adds the
partial sums. The thread count is the number of cores the process may use, so
the same training step gave different low bits on 1 and 2 cores (or under
another CPU set), and the demo's target was reported at test accuracy 0.997, 0.998
or 0.999 for the same seeds. Convolutions and matrix products stay in
YNNPACK (their results do not depend on the thread count; measured on 1 and 2
cores); reductions go to XLA's own emitter, whose summation order is fixed.

:func:`fastxai_jax.train.loop.fit` compiles every training step with these
options. Cost, small CNN step (batch 32 of 64×64) on a shared 2-core machine
(load ~12): 73.5 vs 71.3 ms pinned to one core (+3%); 72 vs 128 ms on both
cores (YNNPACK's threaded reductions lose under contention).

Not covered: a dot that XLA does not hand to YNNPACK, such as a weight gradient
``x.T @ dy`` contracting over the batch (FEX's ViT and heads), runs as an Eigen
contraction that splits a long contraction over the threads, so FEX's training
is reproducible run to run on one machine but not across core counts.
"""

from __future__ import annotations

import functools
import os

import jax

__all__ = ["reproducible_compiler_options"]

_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_YNN_WITHOUT_REDUCE = (
    "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
)


@functools.cache
def _supported() -> bool:
    if jax.default_backend() != "cpu" or _OPTION in os.environ.get("XLA_FLAGS", ""):
        return False  # not XLA:CPU, or the user chose the fusion types explicitly
    try:
        jax.jit(lambda x: x + 1, compiler_options={_OPTION: _YNN_WITHOUT_REDUCE}).lower(
            0.0
        ).compile()
    except Exception:  # a jaxlib that does not know the option: nothing to change
        return False
    return True


def reproducible_compiler_options() -> dict[str, str] | None:
    """``compiler_options`` for ``jax.jit`` whose CPU results do not depend on the core count.

    Returns:
      ``{"xla_cpu_experimental_ynn_fusion_type": ...}`` (YNNPACK for dots and
      convolutions only) on XLA:CPU when this jaxlib knows the option and
      ``XLA_FLAGS`` does not set it; else ``None`` (``jax.jit``'s default).
    """
    return {_OPTION: _YNN_WITHOUT_REDUCE} if _supported() else None
