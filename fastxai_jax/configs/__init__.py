"""Recipes in big_vision's style: one function per experiment, whose docstring
gives the command that runs it and the result it measured.

* :mod:`fastxai_jax.configs.demo`: ``fastxai demo`` and its learned-explainer recipes.
* :mod:`fastxai_jax.configs.benchmarks`: ``experiments/benchmarks/*`` and
  ``experiments/fex_vs_rise.py``.
* ``sweep_*.py`` modules define ``get_config()`` for :func:`fastxai_jax.sweep.run`.
"""
