"""Ctrl-C and SIGTERM (what SLURM, Kubernetes and ``timeout`` send): the flag every trial start checks.

Both signals end a search the same way: the running trial is failed, the results files are written, and the
command exits with code 130 (``errors.EXIT_INTERRUPTED``). A KeyboardInterrupt raised while Python runs a
finalizer (the garbage collected after each trial) is printed and dropped, so the next trial start checks the
flag again.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

INTERRUPTED = threading.Event()


def interrupt(signum: int, frame: FrameType | None) -> None:
    INTERRUPTED.set()
    raise KeyboardInterrupt


def handle_interrupts() -> None:
    """Ctrl-C and SIGTERM both interrupt the search. Under torchrun SIGTERM stays torchrun's: it ends the other
    ranks while rank zero, which ignores it, records the trial (``hpsearch.distributed``)."""
    signal.signal(signal.SIGINT, interrupt)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        signal.signal(signal.SIGTERM, interrupt)
