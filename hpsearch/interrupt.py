"""The Ctrl-C (and SIGTERM) flag that every trial start checks.

Set by ``python -m hpsearch``'s signal handler. A KeyboardInterrupt raised while Python runs a finalizer (the
garbage collected after each trial) is printed and dropped, so the next trial start checks this flag again.
"""

from __future__ import annotations

import threading

INTERRUPTED = threading.Event()
