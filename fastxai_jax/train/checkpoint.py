"""Checkpoints: the only module that imports orbax.

A checkpoint directory holds one sub-directory per saved step (orbax
``CheckpointManager``), each with two items:

* ``state``: the pytree's array leaves as a nested dict of strings, keyed by
  the leaves' key paths (``params/Conv_0/kernel``, ``opt_state/0/mu/...``).
  Storing leaves by path (rather than the pytree itself) makes any pytree
  round-trip - NamedTuples, optax states with empty nodes, typed PRNG keys -
  as long as a *template* with the same structure is given on restore.
* ``config``: a JSON object (the run's configuration, or ``null``).

Saves are synchronous (``wait_until_finished``) and atomic: orbax writes to a
temporary directory and renames it on success, so an interrupted save never
leaves a half-written step behind.

Orbax has no integrity check of its own for array data, so every save also
stores a SHA-256 digest of each array (dtype, shape and bytes) in the
``config`` item; restore recomputes them and refuses a checkpoint whose bytes
changed on disk, naming the file and the array. Checkpoints written before
digests existed load unverified.

The pytree format and its digests live in :mod:`fastxai_jax.train._nested`;
:func:`rewind_log` and :func:`log_seconds` (re-exported from
:mod:`fastxai_jax.train.run_log`) keep a JSONL training log consistent across a
resume (no duplicate steps, total training time).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import orbax.checkpoint as ocp

from fastxai_jax.train._nested import digests as _digests
from fastxai_jax.train._nested import from_nested as _from_nested
from fastxai_jax.train._nested import to_nested as _to_nested
from fastxai_jax.train._nested import verify as _verify
from fastxai_jax.train.run_log import log_seconds, rewind_log

__all__ = ["Checkpointer", "save_params", "load_params", "rewind_log", "log_seconds"]

_STATE = "state"
_CONFIG = "config"
_DIGESTS = "sha256"


def _check_json(config: Any) -> Any:
    try:
        return json.loads(json.dumps(config))
    except (TypeError, ValueError) as err:
        raise ValueError(f"config must be JSON-serialisable; got {config!r} ({err})") from None


class Checkpointer:
    """Saves and restores training state (a pytree) plus a JSON config per step.

    Args:
      directory: where the step sub-directories live (created on first save).
      max_to_keep: how many most recent steps to keep.

    Example::

      ckpt = Checkpointer("runs/x")
      ckpt.save(100, state, config={"lr": 1e-3})
      state, config = ckpt.restore(template_state)  # latest step
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3):
        if int(max_to_keep) < 1:
            raise ValueError(f"max_to_keep must be >= 1; got {max_to_keep}")
        self.directory = pathlib.Path(directory).absolute()
        self.max_to_keep = int(max_to_keep)
        self._manager: ocp.CheckpointManager | None = None

    def _get_manager(self, create: bool) -> ocp.CheckpointManager | None:
        if self._manager is None:
            if not self.directory.exists():
                if not create:
                    return None
                self.directory.mkdir(parents=True, exist_ok=True)
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.max_to_keep, enable_async_checkpointing=False, create=True
            )
            self._manager = ocp.CheckpointManager(
                self.directory, options=options, item_names=(_STATE, _CONFIG)
            )
        return self._manager

    def latest_step(self) -> int | None:
        """The newest saved step, or ``None`` when there is none."""
        manager = self._get_manager(create=False)
        if manager is None:
            return None
        manager.reload()
        return manager.latest_step()

    def all_steps(self) -> list[int]:
        """All saved steps, oldest first."""
        manager = self._get_manager(create=False)
        if manager is None:
            return []
        manager.reload()
        return sorted(manager.all_steps())

    def save(self, step: int, state: Any, config: Any = None) -> None:
        """Saves ``state`` (any pytree of arrays) and ``config`` (JSON) as ``step``.

        Overwrites an existing checkpoint of the same step. Returns once the
        checkpoint is on disk.
        """
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0; got {step}")
        config = _check_json(config)
        manager = self._get_manager(create=True)
        manager.reload()
        if step in manager.all_steps():
            manager.delete(step)
        nested = _to_nested(state)
        args = ocp.args.Composite(
            **{
                _STATE: ocp.args.StandardSave(nested),
                _CONFIG: ocp.args.JsonSave({"config": config, _DIGESTS: _digests(nested)}),
            }
        )
        manager.save(step, args=args, force=True)
        manager.wait_until_finished()

    def restore_config(self, step: int | None = None) -> Any:
        """Only the JSON config saved with ``step`` (default: latest)."""
        step, manager = self._resolve(step)
        where = self.directory / str(step) / _CONFIG
        try:
            restored = manager.restore(
                step, args=ocp.args.Composite(**{_CONFIG: ocp.args.JsonRestore()})
            )
        except Exception as err:  # orbax raises many kinds on damaged files
            raise ValueError(f"checkpoint file {where} is corrupt or unreadable: {err}") from err
        return (restored[_CONFIG] or {}).get("config")

    def _resolve(self, step: int | None) -> tuple[int, ocp.CheckpointManager]:
        manager = self._get_manager(create=False)
        if manager is None:
            raise FileNotFoundError(f"checkpoint directory {self.directory} does not exist")
        manager.reload()
        steps = manager.all_steps()
        if step is None:
            if not steps:
                raise FileNotFoundError(f"no checkpoint found in {self.directory}")
            step = max(steps)
        elif int(step) not in steps:
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory} (saved steps: {sorted(steps)})"
            )
        return int(step), manager

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, Any]:
        """Restores ``(state, config)`` saved at ``step`` (default: latest).

        Args:
          template: a pytree with the structure, leaf shapes and dtypes of the
            saved state (e.g. a freshly initialised state); leaves come back as
            host numpy arrays (typed PRNG keys as keys) in this structure.
          step: which step; ``None`` for the latest.

        Raises:
          FileNotFoundError: no such directory or step.
          ValueError: the checkpoint is corrupt, or its keys or leaf shapes differ
            from ``template`` (naming the first mismatching key).
        """
        nested, config, where = self._restore_verified(step)
        return _from_nested(nested, template, str(where / _STATE)), config

    def restore_raw(self, step: int | None = None) -> tuple[dict[str, Any], Any]:
        """Restores ``(nested dict of arrays, config)`` without a template."""
        nested, config, _ = self._restore_verified(step)
        return nested, config

    def _restore_verified(self, step: int | None) -> tuple[dict[str, Any], Any, pathlib.Path]:
        """Reads step ``step`` (default: latest) and checks its digests.

        Returns ``(nested dict of arrays, config, the step's directory)``; raises
        ``ValueError`` on a corrupt or unreadable checkpoint.
        """
        step, manager = self._resolve(step)
        where = self.directory / str(step)
        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    **{_STATE: ocp.args.StandardRestore(), _CONFIG: ocp.args.JsonRestore()}
                ),
            )
        except Exception as err:  # orbax raises many kinds on damaged files
            raise ValueError(f"checkpoint file {where} is corrupt or unreadable: {err}") from err
        nested, stored = restored[_STATE], restored[_CONFIG] or {}
        if not isinstance(nested, dict):
            raise ValueError(f"checkpoint file {where / _STATE} is corrupt: no state tree")
        _verify(nested, stored.get(_DIGESTS), where / _STATE)
        return nested, stored.get("config"), where

    def close(self) -> None:
        """Waits for pending saves and releases the orbax manager."""
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def save_params(path: str | os.PathLike, params: Any, config: Any = None) -> None:
    """Saves a parameter pytree and a JSON config to directory ``path``.

    Saving again to the same ``path`` replaces the previous weights atomically
    (the new version is written under a new step, then the old one removed).
    """
    with Checkpointer(path, max_to_keep=1) as ckpt:
        latest = ckpt.latest_step()
        ckpt.save(0 if latest is None else latest + 1, params, config)


def load_params(path: str | os.PathLike, template: Any = None) -> tuple[Any, Any]:
    """Loads ``(params, config)`` saved by :func:`save_params`.

    Args:
      path: the directory given to :func:`save_params`.
      template: optional pytree to restore into (checks keys and shapes);
        without it, params come back as nested dicts of numpy arrays (which is
        exactly the structure of Flax Linen variables).

    Raises:
      FileNotFoundError: ``path`` holds no saved params.
      ValueError: corrupt files, or a structure/shape mismatch with ``template``.
    """
    with Checkpointer(path, max_to_keep=1) as ckpt:
        if template is None:
            nested, config = ckpt.restore_raw()
            return nested, config
        return ckpt.restore(template)
