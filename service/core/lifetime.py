"""The bound on a process's shutdown: once a role is told to stop, it ends within a set time.

A shutdown can hang where no timeout reaches: a driver waiting on a server that is gone, a pool
slot that is never given back (asyncpg after a protocol abort, fixed in the appender), a graceful
close of a connection to a hung database. Unbounded, the process lingers: an orphan that holds
its port, its supervisor's output pipe and memory, with nobody left to SIGKILL it (its
supervisor may be the process that died). Every role arms this timer when its signal arrives.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)


def leave_after(seconds: float, what: str) -> threading.Timer:
    """End this process ``seconds`` from now (exit code 1, logged) unless it ended first.

    A thread, not a loop timer: the event loop may be the thing that is stuck."""

    def leave() -> None:
        log.warning("%s did not stop within %.0f s of the signal; exiting", what, seconds)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)

    timer = threading.Timer(seconds, leave)
    timer.daemon = True
    timer.start()
    return timer
