"""Python configs, big_vision style: each module defines ``get_config()``.

A module's docstring gives the command that runs it and what it measured.
``sweep_*.py`` modules configure :func:`fastxai_jax.sweep.run`.
"""
