"""A realistic webhook mix: every published sample of the eleven providers, with varied ids.

Each sample becomes a :class:`Template`: its bytes split where an id stands, so a body is
``suffix.join(parts)``, the sample byte for byte except for its ids, which get a numeric
suffix (numeric so that ids sent as JSON integers, like WAMM's ``msg_id``, stay integers).
The ids varied are the message keys the decoder finds and the provider's event id; a sample
that carries neither (an instance status, an ignored event) has its ``id`` fields varied, and
one whose key is derived from its content (WhatsAble's incoming) its phone number. The samples of one provider share a suffix per round, so a
round is one message's life (message, sent, delivered, read…) as the provider tells it.

The *deck* interleaves the providers: each gets an equal share of the traffic, cycling
through its own samples; slot ``n`` of the endless deck is always the same body.
"""

from __future__ import annotations

import json
import math
import re
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eventstore.events import body_key  # noqa: E402
from projections import providers  # noqa: E402
from projections.facts import DecodeError, Ignored, InstanceStatusReported  # noqa: E402
from tests.support.samples import FORM, sample, sample_names  # noqa: E402

MARK = b"\x00SFX\x00"
#: digits of the per-provider round number in a suffix (10 million rounds per prefix)
ROUND_DIGITS = 7
_ID_FIELD = re.compile(r"(^|_)id$|Id$|^ids$|^idMessage$|^stanzaId$", re.IGNORECASE)
_PHONE_FIELD = re.compile(r"phone", re.IGNORECASE)


@dataclass(frozen=True)
class Template:
    provider: str
    name: str
    content_type: str
    parts: tuple[bytes, ...]
    #: what was varied: "key", "event_id", "id_field", "derived_key" or "" (a constant body)
    varied: str

    def render(self, suffix: bytes) -> bytes:
        return suffix.join(self.parts)


@dataclass(frozen=True)
class Slot:
    template: int
    #: this slot's round within one pass of the deck, and rounds per pass of its provider
    offset: int
    rounds_per_pass: int


def _walk(value: Any, key: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_walk(v, str(k)))
    elif isinstance(value, list):
        for v in value:
            out.extend(_walk(v, key))
    else:
        out.append((key, value))
    return out


def _mark_json(body: bytes, value: str | int, extra: str) -> tuple[bytes, int]:
    """Put MARK after every JSON occurrence of ``value`` (a whole string or a whole number)."""
    tail = extra.encode() + MARK
    if isinstance(value, int) and not isinstance(value, bool):
        pattern = re.compile(rb"([:\[,]\s*)" + str(value).encode() + rb"(?=\s*[,\]\}])")
        return pattern.subn(lambda m: m.group(0) + tail, body)
    quoted = json.dumps(value)[1:-1].encode()
    pattern = re.compile(b'"' + re.escape(quoted) + b'"')
    return pattern.subn(lambda m: m.group(0)[:-1] + tail + b'"', body)


def _mark_form(body: bytes, value: str, extra: str) -> tuple[bytes, int]:
    encoded = urllib.parse.quote_plus(value).encode()
    pattern = re.compile(rb"(?:^|(?<=[=&]))" + re.escape(encoded) + rb"(?=&|$)")
    tail = extra.encode() + MARK
    return pattern.subn(lambda m: m.group(0) + tail, body)


def _targets(provider: str, body: bytes, content_type: str) -> tuple[list[Any], list[Any], str]:
    """(ids to vary with the round's suffix, event ids to vary per sample, what kind)."""
    facts = providers.decode(provider, body, content_type, {})
    keys = sorted(
        {
            f.key
            for f in facts
            if not isinstance(f, Ignored | InstanceStatusReported)
            and not getattr(f, "derived_key", False)
        }
    )
    event_id = providers.event_id(provider, body)
    event_ids: list[Any] = [event_id] if event_id else []
    derived = any(getattr(f, "derived_key", False) for f in facts)
    if (keys or event_ids) and not derived:
        return list(keys), event_ids, "key" if keys else "event_id"
    if content_type == FORM:
        return list(keys), event_ids, ""
    fields = _walk(json.loads(body))
    # a derived key (WhatsAble's incoming messages) is a hash of the sender and the text:
    # vary the sender's number so that each round is a new message
    pattern = _PHONE_FIELD if derived else _ID_FIELD
    ids = {v for k, v in fields if pattern.search(k) and isinstance(v, str) and len(v) >= 4}
    ids.update(keys)
    return sorted(ids), event_ids, ("derived_key" if derived else "id_field") if ids else ""


def _event_id_json(body: bytes, event_id: str) -> Any:
    """The event id as it is written in the body (WhatsGate's is a JSON integer)."""
    if event_id.isdigit() and re.search(rb"[:\[,]\s*" + event_id.encode() + rb"\s*[,\]\}]", body):
        return int(event_id)
    return event_id


def make_template(provider: str, name: str, index: int) -> Template | None:
    """The sample as a template, or None when it does not decode (kept out of the mix)."""
    body, content_type = sample(provider, name)
    try:
        keys, event_ids, varied = _targets(provider, body, content_type)
    except (DecodeError, ValueError):
        return None
    marked = body
    form = content_type == FORM
    for value in keys:
        if form:
            marked, _ = _mark_form(marked, str(value), "")
        elif isinstance(value, str) and value.isdigit() and not _has_string(marked, value):
            marked, _ = _mark_json(marked, int(value), "")
        else:
            marked, _ = _mark_json(marked, value, "")
    for event_id in event_ids:
        # one event id per sample (the samples of a provider reuse the same few)
        marked, _ = _mark_json(marked, _event_id_json(body, event_id), f"{index:02d}")
    parts = tuple(marked.split(MARK))
    return Template(provider, name, content_type, parts, varied if len(parts) > 1 else "")


def _has_string(body: bytes, value: str) -> bool:
    return b'"' + value.encode() + b'"' in body


def templates(only: tuple[str, ...] | None = None) -> list[Template]:
    """Every sample's template, or those of the providers in ``only``."""
    out: list[Template] = []
    for provider in only or providers.PROVIDERS:
        for index, name in enumerate(sample_names(provider)):
            t = make_template(provider, name, index)
            if t is not None:
                out.append(t)
    return out


def deck(items: list[Template]) -> list[Slot]:
    """Providers interleaved, an equal share each, each cycling through its own samples."""
    by_provider: dict[str, list[int]] = {}
    for i, t in enumerate(items):
        by_provider.setdefault(t.provider, []).append(i)
    width = max(len(v) for v in by_provider.values())
    slots: list[Slot] = []
    for j in range(width):
        for indices in by_provider.values():
            n = len(indices)
            slots.append(Slot(indices[j % n], j // n, math.ceil(width / n)))
    return slots


class Mix:
    """Slot ``n`` → (template, body); bodies differ between slots except for constant samples.
    ``only``: the mix of these providers alone (a one-channel log is the mix of one)."""

    def __init__(self, only: tuple[str, ...] | None = None) -> None:
        self.templates = templates(only)
        self.deck = deck(self.templates)

    def suffix(self, n: int, prefix: str) -> bytes:
        passes, j = divmod(n, len(self.deck))
        slot = self.deck[j]
        rnd = passes * slot.rounds_per_pass + slot.offset
        return f"{prefix}{rnd:0{ROUND_DIGITS}d}".encode()

    def body(self, n: int, prefix: str = "1") -> tuple[Template, bytes]:
        slot = self.deck[n % len(self.deck)]
        t = self.templates[slot.template]
        return t, t.render(self.suffix(n, prefix))

    def providers(self) -> list[str]:
        return sorted({t.provider for t in self.templates})

    def describe(self) -> dict[str, Any]:
        """How the mix is made, for the report."""
        per_provider: dict[str, int] = {}
        constant = []
        for t in self.templates:
            per_provider[t.provider] = per_provider.get(t.provider, 0) + 1
            if not t.varied:
                constant.append(f"{t.provider}/{t.name}")
        kinds: dict[str, int] = {}
        for slot in self.deck:
            kind = self.templates[slot.template].varied or "constant"
            kinds[kind] = kinds.get(kind, 0) + 1
        return {
            "templates": len(self.templates),
            "samples_per_provider": per_provider,
            "deck_length": len(self.deck),
            "constant_samples": constant,
            "constant_share": kinds.get("constant", 0) / len(self.deck),
            "varied_by": kinds,
        }


def check(mix: Mix) -> list[str]:
    """Problems with the mix: bodies that no longer decode, or ids that failed to vary."""
    problems: list[str] = []
    n = len(mix.deck)
    seen: dict[tuple[str, str], str] = {}
    for i in range(2 * n):
        t, body = mix.body(i, "7")
        try:
            providers.decode(t.provider, body, t.content_type, {})
        except DecodeError as exc:
            problems.append(f"{t.provider}/{t.name}: {exc.reason}")
            continue
        if not t.varied:
            continue
        event_id = providers.event_id(t.provider, body)
        dedup = f"id:{event_id}" if event_id else body_key(body)
        other = seen.get((t.provider, dedup))
        if other is not None:
            problems.append(f"{t.provider}/{t.name}: same dedup key as {other}")
        seen[(t.provider, dedup)] = t.name
    return problems
