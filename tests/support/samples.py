"""Provider payloads for tests: the shared samples (``../shared/samples``) and the in-repo fixtures.

``tests/fixtures/<provider>/`` holds the shapes found in the providers' version histories
(each file's source is in ``tests/fixtures/SOURCES.md``). A fixture is read like a sample;
its name must not repeat a shared sample's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.support import REPO

ROOT = REPO
SAMPLES = Path(os.environ.get("ACKLOG_SAMPLES", ROOT.parent / "shared" / "samples"))
FIXTURES = ROOT / "tests" / "fixtures"

#: provider name in acklog → folder name under shared/samples, where the two differ (a provider
#: absent here has its samples in a folder of its own name, or none: only in-repo fixtures)
FOLDERS: dict[str, str] = {
    "wamm": "wamm",
    "whatsgate": "whatsgate",
    "chatapi": "chatapi",
    "whatsable": "whatsable",
    "qikchat": "qikchat",
    "meta": "meta_cloud",
    "waha": "waha",
    "evolution": "evolution",
    "greenapi": "green_api",
    "twilio": "twilio",
    "zapi": "zapi",
}

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def folder(provider: str) -> str:
    """The provider's folder under shared/samples."""
    return FOLDERS.get(provider, provider)


def sample(provider: str, name: str) -> tuple[bytes, str]:
    """(body bytes exactly as the provider would POST them, content type).

    Twilio samples wrap the verbatim form body in a JSON object of the collector's; the
    wire body is its ``raw_body``.
    """
    path = FIXTURES / provider / name
    if not path.is_file():
        path = SAMPLES / folder(provider) / name
    data = path.read_bytes()
    if provider == "twilio":
        wrapper = json.loads(data)
        return wrapper["raw_body"].encode(), wrapper.get("content_type", FORM)
    return data, JSON


def _bodies(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix in {".json", ".txt"})


def sample_names(provider: str) -> list[str]:
    """Every shared sample file of a provider (webhook bodies only)."""
    return _bodies(SAMPLES / folder(provider))


def fixture_names(provider: str) -> list[str]:
    """Every in-repo fixture of a provider (``tests/fixtures/<provider>/``)."""
    names = _bodies(FIXTURES / provider)
    clash = set(names) & set(sample_names(provider))
    assert not clash, f"fixtures repeat shared sample names: {sorted(clash)}"
    return names


def all_names(provider: str) -> list[str]:
    """Shared samples then in-repo fixtures: every body the decoder tests feed a decoder."""
    return sample_names(provider) + fixture_names(provider)
