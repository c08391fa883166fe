"""Learned (amortised) explainers: FEX, LTX, TVE, FastSHAP.

Each method module has a frozen-dataclass config and ``make(config, apply_fn,
target_params, *, module=None) -> LearnedExplainer`` (see
:class:`fastxai_jax.core.LearnedExplainer`); :func:`make_update` is the one
training step of all of them and :mod:`.runs` fits, saves and loads any of them.
"""

from fastxai_jax.explainers.learned._update import (
    freeze,
    init_train_state,
    make_trainer,
    make_update,
    optimizer_for,
)

__all__ = ["freeze", "init_train_state", "make_trainer", "make_update", "optimizer_for"]
