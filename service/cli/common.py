"""What the command modules share: settings from the flags, the network and URL flags."""

from __future__ import annotations

import argparse

from service.core.config import Settings, from_env


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings, with ``--host``/``--port`` when the command takes them."""
    return from_env(host=getattr(args, "host", None), port=getattr(args, "port", None))


def net_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--host", help="listen address (ACKLOG_HOST, default 127.0.0.1)")
    sp.add_argument("--port", type=int, help="listen port (ACKLOG_PORT, default 8080)")


def url_arguments(sp: argparse.ArgumentParser) -> None:
    """``--host``/``--port`` of a command that prints a webhook URL and listens nowhere."""
    sp.add_argument(
        "--host",
        help="host in the printed webhook URL (default ACKLOG_HOST, 127.0.0.1;"
        " ACKLOG_PUBLIC_URL, when set, gives the whole base URL instead)",
    )
    sp.add_argument(
        "--port", type=int, help="port in the printed webhook URL (default ACKLOG_PORT, 8080)"
    )
