"""systemd's readiness protocol (sd_notify): one datagram to ``$NOTIFY_SOCKET``, if set.

``Type=notify`` units (deploy/systemd/acklog.service) learn from ``READY=1`` that ``acklog
serve`` accepts requests, and from ``STOPPING=1`` that it is shutting down. The protocol is a
unix datagram of ``KEY=value`` lines, so the standard library does it; the ``sdnotify`` package
(unreleased since 2017) and ``systemd-python`` (a C extension needing libsystemd headers) would
add a dependency for these few lines.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Tell systemd ``state`` (``READY=1``, ``STOPPING=1``…); False when nobody listens."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):  # Linux abstract namespace
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False  # unset, or a transport we do not speak (vsock:)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd of %s at NOTIFY_SOCKET: %s", state, exc)
        return False
    return True
