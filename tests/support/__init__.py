"""Helpers shared by the tests: real processes, apps, payloads, samples, a hanging proxy."""

from __future__ import annotations

from pathlib import Path

#: the repository's root
REPO = Path(__file__).resolve().parents[2]
