"""Sweep outputs on disk: per-process part files, checksummed done markers, resume.

Layout under ``output_dir``::

    sweep.json                          the config and its hash (a different sweep is refused)
    computed.jsonl                      one line per shard computed (resume never repeats one)
    cells/<model>/<method>/shard_00003.part001.npy    process 1's attributions of the shard
    cells/<model>/<method>/shard_00003.part001.jsonl  process 1's score rows (one per image)
    cells/<model>/<method>/shard_00003.done.json      every part's name, size and sha256

Each process writes only its own rows of a shard (no attribution crosses
hosts), each file to a temporary name ``os.replace``-d into place; the
processes then exchange the parts' checksums (a few bytes each) and process 0
writes the done marker, last. A shard counts as finished only when its marker
exists and every part it lists matches, so a file truncated or left by a
killed process is recomputed, never merged. The parts, read in order, are the
shard's rows in image order.
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
    "computed_log",
    "read_shard_attributions",
    "read_shard_rows",
    "shard_is_done",
    "shard_paths",
    "write_marker",
    "write_part",
    "write_shard",
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


def shard_paths(output_dir: str | os.PathLike, model: str, method: str, shard: int, part: int = 0):
    """``(attributions.npy, scores.jsonl)`` of one part and the shard's ``done.json``."""
    cell = pathlib.Path(output_dir) / "cells" / model / method
    stem = f"shard_{shard:05d}"
    part_stem = f"{stem}.part{part:03d}"
    return cell / f"{part_stem}.npy", cell / f"{part_stem}.jsonl", cell / f"{stem}.done.json"


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _marker(output_dir, model: str, method: str, shard: int) -> dict[str, Any] | None:
    try:
        marker = json.loads(shard_paths(output_dir, model, method, shard)[2].read_text())
        return marker if isinstance(marker.get("parts"), list) and marker["parts"] else None
    except (OSError, ValueError, AttributeError):
        return None


def shard_is_done(
    output_dir: str | os.PathLike, model: str, method: str, shard: int, *, full: bool = False
) -> bool:
    """Whether the shard's marker exists and every part it lists matches it.

    Score files are always checked by SHA-256; attribution files by their
    size (a truncated or torn file), or also by SHA-256 with ``full=True``
    (which reads every attribution back: slow on a large sweep).
    """
    marker = _marker(output_dir, model, method, shard)
    if marker is None:
        return False
    cell = shard_paths(output_dir, model, method, shard)[2].parent
    try:
        for part in marker["parts"]:
            for kind in ("npy", "jsonl"):
                path, entry = cell / part[kind]["name"], part[kind]
                if path.stat().st_size != entry["bytes"]:
                    return False
                if (full or kind == "jsonl") and _sha256(path) != entry["sha256"]:
                    return False
    except (OSError, KeyError, TypeError):
        return False
    return True


def write_part(
    output_dir: str | os.PathLike,
    model: str,
    method: str,
    shard: int,
    part: int,
    attributions: np.ndarray,
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """Writes one process's rows of a shard atomically; returns the part's marker entry.

    Args:
      attributions: ``[n, H, W]`` this process's real rows (padding dropped).
      rows: their ``n`` score rows.

    Returns:
      ``{"npy": {name, bytes, sha256}, "jsonl": {...}, "num_images": n}``.
    """
    npy, jsonl, _ = shard_paths(output_dir, model, method, shard, part)
    npy.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(attributions, np.float32))
    payloads = {
        "npy": buffer.getvalue(),
        "jsonl": "".join(json.dumps(r) + "\n" for r in rows).encode(),
    }
    entry: dict[str, Any] = {"num_images": len(rows)}
    for kind, path in (("npy", npy), ("jsonl", jsonl)):
        _atomic_write(path, payloads[kind])
        digest = hashlib.sha256(payloads[kind]).hexdigest()
        entry[kind] = {"name": path.name, "bytes": len(payloads[kind]), "sha256": digest}
    return entry


def unmark(output_dir: str | os.PathLike, model: str, method: str, shard: int) -> None:
    """Removes a shard's done marker (a stale marker must never vouch for new parts)."""
    shard_paths(output_dir, model, method, shard)[2].unlink(missing_ok=True)


def write_marker(
    output_dir: str | os.PathLike, model: str, method: str, shard: int, parts: list[dict]
) -> None:
    """Writes the shard's done marker listing ``parts`` (in order), then a log line."""
    marker = {"parts": list(parts), "num_images": sum(p["num_images"] for p in parts)}
    _atomic_write(
        shard_paths(output_dir, model, method, shard)[2], json.dumps(marker, indent=1).encode()
    )
    line = {"model": model, "method": method, "shard": shard, "parts": len(parts),
            "pid": os.getpid(), "time": time.time()}  # fmt: skip
    with open(pathlib.Path(output_dir) / "computed.jsonl", "a") as log:
        log.write(json.dumps(line) + "\n")


def write_shard(
    output_dir: str | os.PathLike,
    model: str,
    method: str,
    shard: int,
    attributions: np.ndarray,
    rows: list[dict[str, Any]],
) -> None:
    """One process holding a whole shard: its only part, then the marker."""
    unmark(output_dir, model, method, shard)
    entry = write_part(output_dir, model, method, shard, 0, attributions, rows)
    write_marker(output_dir, model, method, shard, [entry])


def _checked_parts(output_dir, model, method, shard, full) -> tuple[pathlib.Path, list[dict]]:
    if not shard_is_done(output_dir, model, method, shard, full=full):
        raise ValueError(
            f"shard {shard} of {model}/{method} is missing or corrupt; rerun the sweep"
        )
    cell = shard_paths(output_dir, model, method, shard)[2].parent
    return cell, _marker(output_dir, model, method, shard)["parts"]


def read_shard_rows(
    output_dir: str | os.PathLike, model: str, method: str, shard: int, *, full: bool = False
) -> list:
    """The score rows of a finished shard, all parts in order (checked as in
    :func:`shard_is_done`).

    Raises:
      ValueError: the shard is missing or does not match its marker.
    """
    cell, parts = _checked_parts(output_dir, model, method, shard, full)
    return [
        json.loads(line)
        for part in parts
        for line in (cell / part["jsonl"]["name"]).read_text().splitlines()
    ]


def read_shard_attributions(
    output_dir: str | os.PathLike, model: str, method: str, shard: int
) -> np.ndarray:
    """``[n, H, W]`` attributions of a finished shard, all parts in order (full check).

    Raises:
      ValueError: the shard is missing or does not match its marker.
    """
    cell, parts = _checked_parts(output_dir, model, method, shard, True)
    return np.concatenate([np.load(cell / part["npy"]["name"]) for part in parts])


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
