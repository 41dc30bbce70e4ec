"""Crash tests' hook: SIGKILLs this process at a named step of a release when IMGPIPE_KILL_AT names that step.

The release steps (promotion, rollback, `dvc add`, `dvc push`) must survive `kill -9` at any point; the tests
prove it by setting IMGPIPE_KILL_AT for a real subprocess and running again. Unset, it does nothing.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "IMGPIPE_KILL_AT"


def reached(step: str, process_group: int | None = None) -> None:
    """Die here, like `kill -9`, when IMGPIPE_KILL_AT is `step`; first kill `process_group` (a running child's)."""
    if os.environ.get(VARIABLE) != step:
        return
    if process_group is not None:
        try:
            os.killpg(process_group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.kill(os.getpid(), signal.SIGKILL)
