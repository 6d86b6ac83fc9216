"""What the command modules share: settings from the flags, the network flags."""

from __future__ import annotations

import argparse

from service.core.config import Settings, from_env


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings, with ``--host``/``--port`` when the command takes them."""
    return from_env(host=getattr(args, "host", None), port=getattr(args, "port", None))


def net_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--host", help="listen address (ACKLOG_HOST, default 127.0.0.1)")
    sp.add_argument("--port", type=int, help="listen port (ACKLOG_PORT, default 8080)")
