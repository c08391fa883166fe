"""``run(config)``: a resumable explain-and-score sweep over every device of every host.

JAX's multi-controller model is the engine: every process runs this same
function; ``jax.distributed.initialize()`` joins them (TPU pods, SLURM and
Open MPI are detected by JAX; local processes pass a coordinator address);
each process reads only its rows of each shard and the global batch is built
with ``jax.make_array_from_process_local_data``. Each process writes its own
rows of each shard (a part file; no attribution crosses hosts), process 0
the shard's done marker (with every part's checksum) and the merged table.
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from fastxai_jax.explainers.registry import is_learned
from fastxai_jax.sweep import store
from fastxai_jax.sweep.config import config_hash, load_config, validate_config
from fastxai_jax.sweep.merge import merge
from fastxai_jax.sweep.sources import load_model, num_shards, open_source, shard_indices
from fastxai_jax.sweep.step import MASK_METRICS, make_step, method_key
from fastxai_jax.train.sharding import global_batch, global_mesh, process_rows, replicate

__all__ = ["run", "initialize_distributed"]


def initialize_distributed(
    distributed: bool | None = None,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = 300,
) -> None:
    """Joins ``jax.distributed`` when asked to, or when ``$JAX_COORDINATOR_ADDRESS`` is set.

    ``distributed=True`` with no address lets JAX detect the cluster (TPU pod,
    SLURM, Open MPI). CPU processes talk over Gloo. A no-op if already joined or
    if ``distributed=False``.
    """
    if distributed is False or jax.distributed.is_initialized():
        return
    if not (distributed or coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")):
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address, num_processes, process_id, initialization_timeout=timeout_s
    )


def _score_rows(model, method, indices, columns, valid) -> list[dict[str, Any]]:
    rows = []
    for i in range(valid):
        row = {"model": model, "method": method, "index": int(indices[i])}
        row.update({name: np.asarray(values[i]).item() for name, values in columns.items()})
        rows.append(row)
    return rows


def _local_rows(array: jax.Array) -> np.ndarray:
    """This process's rows of a batch-sharded global array, in global order."""
    shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards])


_DIGEST_BYTES = 32 + 32 + 3 * 8  # two sha256 digests, then three int64 sizes


def _pack(entry: dict[str, Any]) -> np.ndarray:
    sizes = [entry["npy"]["bytes"], entry["jsonl"]["bytes"], entry["num_images"]]
    raw = bytes.fromhex(entry["npy"]["sha256"]) + bytes.fromhex(entry["jsonl"]["sha256"])
    return np.frombuffer(raw + np.asarray(sizes, "<i8").tobytes(), np.uint8)


def _unpack(packed: np.ndarray, names: tuple[str, str]) -> dict[str, Any]:
    raw = np.asarray(packed, np.uint8).tobytes()
    sizes = np.frombuffer(raw[64:], "<i8").tolist()
    return {
        "num_images": sizes[2],
        "npy": {"name": names[0], "bytes": sizes[0], "sha256": raw[:32].hex()},
        "jsonl": {"name": names[1], "bytes": sizes[1], "sha256": raw[32:64].hex()},
    }


def _check_before_compute(config, source) -> None:
    """Refuses, naming the field, what only the opened source can tell."""
    if config["target"] == "label" and not source.has_labels:
        raise ValueError("sweep config field target: 'label', but the data have no class labels")
    for i, metric in enumerate(config["metrics"]):
        if metric["name"] in MASK_METRICS and source.read_masks is None:
            raise ValueError(
                f"sweep config field metrics[{i}].name: {metric['name']!r} scores maps against "
                f"ground-truth masks, but data.source {config['data']['source']!r} "
                f"({config['data'].get('name') or config['data'].get('path', '')}) has none; "
                "use the groundtruth benchmark or a tfds detection split (VOC)"
            )
    for i, method in enumerate(config["methods"]):
        if is_learned(method["name"]):
            where = pathlib.Path(method["explainer"]) / "explainer"
            if not where.exists():
                raise ValueError(
                    f"sweep config field methods[{i}].explainer: no trained explainer in "
                    f"{where} (train one with runs.fit or `fastxai train-explainer`)"
                )


def _load_learned(config, sample) -> dict[str, tuple[Any, Any, dict[str, Any]]]:
    """``{model label: (apply_fn, variables, {method label: Trained})}`` for every
    model a learned method explains; refuses, naming the field, an explainer of
    another method or one built for another class count (before any compute)."""
    from fastxai_jax.explainers.learned import runs

    learned = [(i, m) for i, m in enumerate(config["methods"]) if is_learned(m["name"])]
    loaded = {}
    for model in config["models"] if learned else ():
        apply_fn, variables, module = load_model(model, sample, with_module=True)
        trained = {}
        for i, method in learned:
            try:
                trained[method["label"]] = runs.load(
                    method["explainer"], apply_fn=apply_fn, target_params=variables,
                    module=module, method=method["name"],
                )  # fmt: skip
            except (ValueError, FileNotFoundError) as err:
                raise ValueError(
                    f"sweep config field methods[{i}].explainer: {method['explainer']} does not "
                    f"serve {method['name']!r} on model {model['label']!r}: {err}"
                ) from err
        loaded[model["label"]] = (apply_fn, variables, trained)
    return loaded


def _todo(config, total: int) -> dict[tuple[str, str], list[int]]:
    """Unfinished shards per (model, method), decided by process 0 and broadcast."""
    from jax.experimental import multihost_utils

    cells = [(m["label"], k["label"]) for m in config["models"] for k in config["methods"]]
    done = np.asarray(
        [[store.shard_is_done(config["output_dir"], *c, s) for s in range(total)] for c in cells],
        np.int32,
    )
    if jax.process_count() > 1:
        done = np.asarray(multihost_utils.broadcast_one_to_all(done))
    return {cell: [s for s in range(total) if not done[i, s]] for i, cell in enumerate(cells)}


def run(
    config: str | Mapping[str, Any],
    *,
    distributed: bool | None = None,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs (or resumes) a sweep: models × methods × shards, scored, then merged.

    Args:
      config: a config dict, a ``.py`` path or a config module name (see
        :mod:`fastxai_jax.sweep.config`).
      distributed: join ``jax.distributed`` (None: only if an address is given
        or ``$JAX_COORDINATOR_ADDRESS`` is set).
      coordinator_address: ``host:port`` of process 0 (local multi-process runs).
      num_processes: number of processes (with ``coordinator_address``).
      process_id: this process's index (with ``coordinator_address``).
      progress: a tqdm bar per process (images/s and ETA).

    Returns:
      ``{"output_dir", "computed": shards computed now, "skipped": finished
      shards found, "num_images", "table": merged table or None off process 0}``.

    Raises:
      ValueError: a bad config field (named), before any compute.
    """
    config = validate_config(load_config(config))
    initialize_distributed(distributed, coordinator_address, num_processes, process_id)
    mesh = global_mesh()
    shard_size, num_devices = config["shard_size"], mesh.devices.size
    if shard_size % num_devices:
        raise ValueError(
            f"sweep config field shard_size: {shard_size} must be divisible by the "
            f"{jax.process_count()} processes × {jax.local_device_count()} devices each "
            f"= {num_devices} devices"
        )
    source = open_source(config["data"])
    _check_before_compute(config, source)
    sample = source.read(np.zeros(1, np.int64))[0]
    learned = _load_learned(config, sample)
    digest = config_hash(config)
    leader = jax.process_index() == 0
    store.claim_output_dir(config["output_dir"], config, digest, source.num_images, write=False)
    if leader:
        store.claim_output_dir(config["output_dir"], config, digest, source.num_images)
    total = num_shards(source.num_images, shard_size)
    todo = _todo(config, total)
    start, stop = process_rows(shard_size, mesh)
    metrics = [(m["name"], m["options"]) for m in config["metrics"]]
    use_masks = any(name in MASK_METRICS for name, _ in metrics)
    num_todo = sum(
        shard_indices(source.num_images, shard_size, s)[1] for v in todo.values() for s in v
    )
    from jax.experimental import multihost_utils
    from tqdm.auto import tqdm

    bar = tqdm(
        total=num_todo, unit="img", desc=f"sweep p{jax.process_index()}", disable=not progress
    )
    computed, began = 0, time.perf_counter()
    for model in config["models"]:
        if not any(todo[(model["label"], k["label"])] for k in config["methods"]):
            continue
        if model["label"] in learned:
            apply_fn, variables, trained = learned.pop(model["label"])
        else:
            (apply_fn, variables), trained = load_model(model, sample), {}
        target_params = replicate(variables, mesh)
        for method in config["methods"]:
            shards = todo[(model["label"], method["label"])]
            if not shards:
                continue
            explainer = trained.get(method["label"])
            params = target_params
            if explainer is not None:  # explainer params travel replicated, not as statics
                params = (target_params, replicate(explainer.params, mesh))
            step = make_step(
                apply_fn, method["name"], method["options"], metrics, mesh,
                target_mode=config["target"],
                explainer=None if explainer is None else explainer.explainer,
            )  # fmt: skip
            key = method_key(config["seed"], method["label"])
            for shard in shards:
                indices, valid = shard_indices(source.num_images, shard_size, shard)
                mine = indices[start:stop]
                images, labels = source.read(mine)
                masks = (source.read_masks(mine),) if use_masks else ()
                batch = global_batch((images, labels, mine.astype(np.int32), *masks), mesh,
                                     shard_size)  # fmt: skip
                attribution, columns = step(params, *batch[:3], key, *batch[3:])
                real = max(0, min(valid, stop) - start)  # this process's real (unpadded) rows
                rows = _score_rows(
                    model["label"], method["label"], mine,
                    {k: _local_rows(v) for k, v in columns.items()}, real,
                )  # fmt: skip
                cell = (config["output_dir"], model["label"], method["label"], shard)
                if jax.process_count() == 1:
                    store.write_shard(*cell, _local_rows(attribution)[:real], rows)
                else:
                    if leader:  # parts are checked against the marker: no barrier needed
                        store.unmark(*cell)
                    entry = store.write_part(
                        *cell, jax.process_index(), _local_rows(attribution)[:real], rows
                    )
                    packed = multihost_utils.process_allgather(_pack(entry))
                    if leader:
                        names = [store.shard_paths(*cell, p)[:2] for p in range(len(packed))]
                        parts = [_unpack(packed[p], (names[p][0].name, names[p][1].name))
                                 for p in range(len(packed))]  # fmt: skip
                        store.write_marker(*cell, parts)
                computed += 1
                bar.update(valid)
    bar.close()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("fastxai_sweep_done")
    table = merge(config["output_dir"]) if leader else None
    return {
        "output_dir": config["output_dir"],
        "computed": computed,
        "skipped": len(config["models"]) * len(config["methods"]) * total - computed,
        "num_images": source.num_images,
        "seconds": time.perf_counter() - began,
        "table": table,
    }
