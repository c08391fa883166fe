"""Runs ``fastxai ARGS`` and SIGKILLs itself in the middle of one checkpoint save.

Environment: ``KILL_DIR`` names the directory whose save is killed (``params`` or
``checkpoints``), ``KILL_STEP`` optionally the step. The kill lands after orbax
has written every file of the save into its temporary directory and before the
commit (the rename), i.e. during the save. Used by ``test_kill_resume.py``.
"""

import os
import signal
import sys

kill_dir, kill_step = os.environ.get("KILL_DIR"), os.environ.get("KILL_STEP")
if kill_dir:
    from orbax.checkpoint._src.path import atomicity

    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self):
        final = self._final_path
        if final.parent.name == kill_dir and kill_step in (None, final.name):
            os.kill(os.getpid(), signal.SIGKILL)
        return await original(self)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize

from fastxai_jax.cli import main  # noqa: E402

raise SystemExit(main(sys.argv[1:]))
