"""Former home of the learned-explainer recipes, now :mod:`fastxai_jax.configs.learned`.

Only these names remain, for ``tests/explainers/test_target_backbone.py``
(they take the parsed ``train-explainer`` flags as the recipe); import them
from :mod:`fastxai_jax.configs.learned` instead.
"""

from fastxai_jax.configs.learned import fastshap_config as _fastshap_config
from fastxai_jax.configs.learned import optimizer_settings
from fastxai_jax.configs.learned import tve_config as _tve_config

__all__ = ["_fastshap_config", "_tve_config", "optimizer_settings"]
