"""The event loop: uvloop where it is installed, asyncio otherwise (``ACKLOG_LOOP`` decides).

``ACKLOG_LOOP=auto`` (default) takes uvloop when importable, ``uvloop`` requires it,
``asyncio`` forces the standard loop. uvloop runs the same aiohttp and asyncpg code with less
CPU per request (measured in ``make bench``); both loops are tested.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``asyncio.Runner`` (None: the standard asyncio loop); ``choice``
    is ``Settings.loop`` (validated there)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop  # late: optional (absent on Windows, or not installed)
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("ACKLOG_LOOP=uvloop but uvloop is not installed") from None
        return None
    new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new_loop


def name(choice: str = "auto") -> str:
    return "asyncio" if factory(choice) is None else "uvloop"


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run`` on the chosen loop."""
    with asyncio.Runner(loop_factory=factory(choice)) as runner:
        return runner.run(main)
