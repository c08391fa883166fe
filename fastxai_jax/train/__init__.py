"""Training stack: one loop, one checkpoint module, sharding helpers."""

from fastxai_jax.train.checkpoint import Checkpointer, load_params, save_params
from fastxai_jax.train.loop import TrainState, fit, init_state, make_optimizer
from fastxai_jax.train.sharding import data_mesh, replicate, shard_batch

__all__ = [
    "Checkpointer",
    "TrainState",
    "data_mesh",
    "fit",
    "init_state",
    "load_params",
    "make_optimizer",
    "replicate",
    "save_params",
    "shard_batch",
]
