"""Runs a sweep and SIGKILLs itself mid-shard: after the ``KILL_AT``-th file write.

Write 1 is ``sweep.json``; each shard then writes its ``.npy``, ``.jsonl`` and
``.done.json``; killing after write 8 leaves shards 0 and 1 finished and
shard 2 with an ``.npy`` but no marker (a process killed mid-shard).
"""

import os
import signal
import sys

from fastxai_jax import sweep
from fastxai_jax.sweep import store

KILL_AT = int(os.environ["KILL_AT"])
_write = store._atomic_write
_count = [0]


def _write_then_maybe_die(path, payload):
    _write(path, payload)
    _count[0] += 1
    if _count[0] == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


store._atomic_write = _write_then_maybe_die
sweep.run(sys.argv[1], progress=False)
