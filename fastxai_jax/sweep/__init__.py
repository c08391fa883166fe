"""Sweeps: methods × models × data shards over every device of every host, resumable.

``fastxai_jax.sweep.run(config)`` (and ``fastxai sweep CONFIG``) explains and
scores a dataset shard by shard with one jitted step over a mesh of all
devices, writes checksummed per-shard files atomically, skips finished shards
on restart and merges everything into one table.
"""

from fastxai_jax.sweep.config import config_hash, load_config, validate_config
from fastxai_jax.sweep.merge import merge
from fastxai_jax.sweep.runner import initialize_distributed, run
from fastxai_jax.sweep.step import available_metrics, lookup_method, lookup_metric, make_step

__all__ = [
    "available_metrics",
    "config_hash",
    "initialize_distributed",
    "load_config",
    "lookup_method",
    "lookup_metric",
    "make_step",
    "merge",
    "run",
    "validate_config",
]
