"""Access to the published provider payloads in ``../shared/samples`` (test fixtures)."""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = Path(os.environ.get("ACKLOG_SAMPLES", ROOT.parent / "shared" / "samples"))

#: provider name in acklog → folder name under shared/samples
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


def sample(provider: str, name: str) -> tuple[bytes, str]:
    """(body bytes exactly as the provider would POST them, content type).

    Twilio samples wrap the verbatim form body in a JSON object of the collector's; the
    wire body is its ``raw_body``.
    """
    path = SAMPLES / FOLDERS[provider] / name
    data = path.read_bytes()
    if provider == "twilio":
        wrapper = json.loads(data)
        return wrapper["raw_body"].encode(), wrapper.get("content_type", FORM)
    return data, JSON


def sample_names(provider: str) -> list[str]:
    """Every sample file of a provider (webhook bodies only)."""
    folder = SAMPLES / FOLDERS[provider]
    return sorted(p.name for p in folder.iterdir() if p.suffix in {".json", ".txt"})
