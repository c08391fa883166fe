"""Sweep outputs on disk: atomic per-shard files, checksummed done markers, resume.

Layout under ``output_dir``::

    sweep.json                          the config and its hash (a different sweep is refused)
    computed.jsonl                      one line per shard computed (resume never repeats one)
    cells/<model>/<method>/shard_00003.npy     attributions of the shard's real images
    cells/<model>/<method>/shard_00003.jsonl   one score row per image
    cells/<model>/<method>/shard_00003.done.json   sha256 and size of both files

Each file is written to a temporary name and ``os.replace``-d into place; the
done marker is written last. A shard counts as finished only when its marker
exists and both files match its checksums, so a file truncated or left by a
killed process is recomputed, never merged.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "claim_output_dir",
    "shard_paths",
    "shard_is_done",
    "write_shard",
    "read_shard_rows",
    "computed_log",
]


def _atomic_write(path: pathlib.Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def claim_output_dir(
    output_dir: str | os.PathLike,
    config: Mapping[str, Any],
    digest: str,
    num_images: int,
    *,
    write: bool = True,
) -> None:
    """Checks that ``sweep.json`` is absent or this sweep's; writes it if absent and ``write``.

    Raises:
      ValueError: ``output_dir`` holds a different sweep's results.
    """
    root = pathlib.Path(output_dir)
    manifest = root / "sweep.json"
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        if saved.get("config_hash") != digest:
            raise ValueError(
                f"sweep config field output_dir: {root} holds a different sweep's results "
                f"(config hash {str(saved.get('config_hash'))[:12]}, this one {digest[:12]}); "
                "use another output_dir or delete it"
            )
        return
    if root.exists() and any(not p.name.startswith(".") for p in root.iterdir()):
        raise ValueError(
            f"sweep config field output_dir: {root} is not empty and holds no sweep.json; "
            "use another output_dir"
        )
    if not write:
        return
    root.mkdir(parents=True, exist_ok=True)
    saved = {"config_hash": digest, "num_images": num_images, "config": config}
    text = json.dumps(saved, indent=1, default=str)
    _atomic_write(manifest, text.encode())


def shard_paths(output_dir: str | os.PathLike, model: str, method: str, shard: int):
    """``(attributions.npy, scores.jsonl, done.json)`` paths of one shard."""
    cell = pathlib.Path(output_dir) / "cells" / model / method
    stem = f"shard_{shard:05d}"
    return cell / f"{stem}.npy", cell / f"{stem}.jsonl", cell / f"{stem}.done.json"


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_is_done(
    output_dir: str | os.PathLike, model: str, method: str, shard: int, *, full: bool = False
) -> bool:
    """Whether the shard's marker exists and its files match it.

    The scores file is always checked by SHA-256; the attribution file by its
    size (a truncated or torn file), or also by SHA-256 with ``full=True``
    (which reads every attribution back: slow on a large sweep).
    """
    npy, jsonl, done = shard_paths(output_dir, model, method, shard)
    try:
        marker = json.loads(done.read_text())
        return all(
            path.stat().st_size == marker[path.name]["bytes"]
            and (not (full or path == jsonl) or _sha256(path) == marker[path.name]["sha256"])
            for path in (npy, jsonl)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_shard(
    output_dir: str | os.PathLike,
    model: str,
    method: str,
    shard: int,
    attributions: np.ndarray,
    rows: list[dict[str, Any]],
) -> None:
    """Writes one shard's files atomically, then its done marker, then a log line."""
    npy, jsonl, done = shard_paths(output_dir, model, method, shard)
    npy.parent.mkdir(parents=True, exist_ok=True)
    done.unlink(missing_ok=True)  # a stale marker must never vouch for new files
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(attributions, np.float32))
    payloads = {npy: buffer.getvalue(), jsonl: "".join(json.dumps(r) + "\n" for r in rows).encode()}
    marker = {}
    for path, payload in payloads.items():
        _atomic_write(path, payload)
        marker[path.name] = {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    marker["num_images"] = len(rows)
    _atomic_write(done, json.dumps(marker, indent=1).encode())
    line = {
        "model": model,
        "method": method,
        "shard": shard,
        "pid": os.getpid(),
        "time": time.time(),
    }
    with open(pathlib.Path(output_dir) / "computed.jsonl", "a") as log:
        log.write(json.dumps(line) + "\n")


def read_shard_rows(
    output_dir: str | os.PathLike, model: str, method: str, shard: int, *, full: bool = False
) -> list:
    """The score rows of a finished shard (checked as in :func:`shard_is_done`).

    Raises:
      ValueError: the shard is missing or does not match its marker.
    """
    if not shard_is_done(output_dir, model, method, shard, full=full):
        raise ValueError(
            f"shard {shard} of {model}/{method} is missing or corrupt; rerun the sweep"
        )
    _, jsonl, _ = shard_paths(output_dir, model, method, shard)
    return [json.loads(line) for line in jsonl.read_text().splitlines()]


def computed_log(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every shard computation recorded in ``computed.jsonl`` (a torn last line is skipped)."""
    path = pathlib.Path(output_dir) / "computed.jsonl"
    if not path.exists():
        return []
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            continue
    return lines
