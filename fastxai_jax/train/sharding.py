"""Data-parallel sharding helpers over a 1-D device ``Mesh`` with axis ``"data"``.

Batches are split along their leading dimension across devices; parameters
and optimiser state are replicated. ``jax.jit`` then runs the same program on
every device and inserts the gradient all-reduce itself (the modern form of
pmap-style data parallelism).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "DATA_AXIS",
    "data_mesh",
    "global_batch",
    "global_mesh",
    "place_batch",
    "process_rows",
    "replicate",
    "shard_batch",
]

DATA_AXIS = "data"


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (default: all), axis ``"data"``."""
    devices = jax.devices()
    if num_devices is None:
        num_devices = len(devices)
    if not isinstance(num_devices, int | np.integer) or not 1 <= num_devices <= len(devices):
        raise ValueError(
            f"num_devices must be an int in [1, {len(devices)}] (available devices); "
            f"got {num_devices!r}"
        )
    return Mesh(np.asarray(devices[: int(num_devices)]), (DATA_AXIS,))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Places every leaf of ``batch`` split along its leading axis over ``mesh``.

    Raises:
      ValueError: a leaf is a scalar or its batch size is not divisible by the
        number of devices in the mesh.
    """
    num_devices = mesh.devices.size
    sharding = NamedSharding(mesh, P(DATA_AXIS))

    def put(path, leaf):
        shape = np.shape(leaf)
        name = jax.tree_util.keystr(path) or "batch"
        if len(shape) == 0:
            raise ValueError(f"batch leaf {name} is a scalar; batch leaves need a leading axis")
        if shape[0] % num_devices:
            raise ValueError(
                f"batch size {shape[0]} (leaf {name}) is not divisible by the device count "
                f"{num_devices}"
            )
        return jax.device_put(leaf, sharding)

    return jax.tree_util.tree_map_with_path(put, batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a full copy of every leaf of ``tree`` on each device of ``mesh``."""
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda leaf: jax.device_put(leaf, sharding), tree)


def global_mesh() -> Mesh:
    """A 1-D ``"data"`` mesh over every device of every process (``jax.devices()`` order).

    The devices of one process are contiguous in it, so process ``p`` holds rows
    ``[p·B/P, (p+1)·B/P)`` of a batch split along the mesh (see :func:`process_rows`).
    """
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def process_rows(global_size: int, mesh: Mesh) -> tuple[int, int]:
    """``(start, stop)``: the rows of a ``global_size`` batch that this process feeds.

    Raises:
      ValueError: ``global_size`` is not divisible by the mesh's device count.
    """
    num_devices = mesh.devices.size
    if global_size % num_devices:
        raise ValueError(
            f"global batch size {global_size} is not divisible by the device count {num_devices}"
        )
    per_device = global_size // num_devices
    mine = [i for i, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]
    if mine != list(range(mine[0], mine[-1] + 1)):
        raise ValueError("this process's devices are not contiguous in the mesh")
    return mine[0] * per_device, (mine[-1] + 1) * per_device


def global_batch(local: Any, mesh: Mesh, global_size: int) -> Any:
    """Builds global arrays split along ``"data"`` from this process's rows of every leaf.

    Args:
      local: a pytree of numpy arrays, each ``[global_size / P, ...]`` (this
        process's rows, as given by :func:`process_rows`).
      mesh: the global mesh.
      global_size: the global batch size.
    """
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    return jax.tree.map(
        lambda leaf: jax.make_array_from_process_local_data(
            sharding, np.asarray(leaf), (global_size, *np.shape(leaf)[1:])
        ),
        local,
    )


def place_batch(batch: Any, mesh: Mesh, *, process_local: bool = False) -> Any:
    """A batch split along ``"data"`` over ``mesh``, which may span processes.

    Args:
      batch: a pytree of arrays with a leading batch axis: the whole global
        batch (every process passes the same one; each places only its rows),
        or, with ``process_local``, only this process's rows of it (see
        :func:`process_rows`), as a process reads its own shard of the data.
      mesh: a ``"data"`` mesh (:func:`data_mesh`, or :func:`global_mesh` under
        ``jax.distributed``).
      process_local: whether ``batch`` holds this process's rows only.

    Raises:
      ValueError: a scalar leaf, leaves of different batch sizes, or a global
        batch not divisible by the mesh's device count.
    """
    sizes = set()

    def size(path, leaf):
        if np.ndim(leaf) == 0:
            name = jax.tree_util.keystr(path) or "batch"
            raise ValueError(f"batch leaf {name} is a scalar; batch leaves need a leading axis")
        sizes.add(int(np.shape(leaf)[0]))

    jax.tree_util.tree_map_with_path(size, batch)
    if len(sizes) > 1:
        raise ValueError(f"batch leaves have different batch sizes {sorted(sizes)}")
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    if not process_local and local_devices == mesh.devices.size:
        return shard_batch(batch, mesh)
    (rows,) = sizes or {0}
    if process_local:
        if rows % local_devices:
            raise ValueError(
                f"process-local batch size {rows} is not divisible by this process's "
                f"{local_devices} devices"
            )
        global_size = rows // local_devices * mesh.devices.size
        return global_batch(batch, mesh, global_size)
    start, stop = process_rows(rows, mesh)
    return global_batch(jax.tree.map(lambda leaf: np.asarray(leaf)[start:stop], batch), mesh, rows)
