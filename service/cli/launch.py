"""The ``acklog`` entry point. A background command lowers its CPU priority before the rest
of acklog is imported: importing it costs ~0.5 s of CPU, which a retention run started beside
a busy ingest would otherwise take at ingest's own priority (bench lifecycle)."""

from __future__ import annotations

import os
import sys

#: commands that run at ``SCHED_IDLE`` from their first instruction (service.runtime.roles
#: lowers them again, and logs what it got, once logging is set up)
BACKGROUND = (("retention", "run"),)


def main() -> int:
    if tuple(sys.argv[1:3]) in BACKGROUND and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass  # roles.lower_priority falls back to nice 19, and says so
    # imported here, not above: the priority must be set before this import's CPU time
    from service.cli.main import main as command

    return command()
