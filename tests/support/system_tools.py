"""Programs from Debian packages that tests run (caddy, nginx, openssl…): found, or the test is
skipped, and under CI (``.ci/run`` installs them) failed instead."""

from __future__ import annotations

import os
import shutil

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def system_binary(name: str, package: str) -> str:
    """The path of ``name`` (``/usr/sbin`` too: not on every user's PATH)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path:
        return path
    if under_ci():
        pytest.fail(f"{name} not found: install Debian package {package} (see .ci/run)")
    pytest.skip(f"{name} not installed (apt-get install -y {package})")
