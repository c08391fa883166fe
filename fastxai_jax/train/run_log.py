"""The JSONL training log of :func:`fastxai_jax.train.loop.fit`, kept consistent
across a resume: no duplicate steps (:func:`rewind_log`), the whole run's training
time (:func:`log_seconds`)."""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any


def _read_log(path: pathlib.Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    return records


def rewind_log(path: str | os.PathLike, step: int) -> float:
    """Drops the records of steps ``>= step`` from a JSONL log; returns the last kept ``time``.

    A run resumed from the checkpoint of ``step`` recomputes those steps; without
    this they would be logged twice. ``fit`` continues its ``time`` column from
    the returned value, so that ``time`` counts the whole run across resumes.
    The rewrite is atomic (temporary file, then rename).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        return 0.0
    text = path.read_text()
    records = [r for r in _read_log(path) if isinstance(r, dict)]
    kept = [r for r in records if not r.get("step", -1) >= step]
    if len(kept) != len(records) or (text and not text.endswith("\n")):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, path)
    return log_seconds(path)


def log_seconds(path: str | os.PathLike) -> float:
    """Training seconds of the whole run logged at ``path`` by ``fit``: the last ``time``."""
    path = pathlib.Path(path)
    if not path.is_file():
        return 0.0
    times = [r.get("time") for r in _read_log(path) if isinstance(r, dict)]
    times = [float(t) for t in times if isinstance(t, int | float) and math.isfinite(t)]
    return times[-1] if times else 0.0
