"""For any input, every decoder returns facts or raises DecodeError — and does so twice alike."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.facts import DecodeError, Fact
from projections.providers import PROVIDERS, decoder
from tests.support.samples import FORM, JSON, all_names, sample

json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def outcome(provider: str, body: bytes, ctype: str, headers: Mapping[str, str]) -> Any:
    try:
        facts = decoder(provider)(body, ctype, headers)
    except DecodeError as exc:
        assert exc.reason, "a decode error must say why"
        return ("error", exc.reason)
    assert isinstance(facts, list)
    for fact in facts:
        assert isinstance(fact, Fact)  # type: ignore[arg-type]
    return ("facts", facts)


def check(provider: str, body: bytes, ctype: str, headers: Mapping[str, str] | None = None) -> None:
    headers = headers or {"Content-Type": ctype}
    assert outcome(provider, body, ctype, headers) == outcome(provider, body, ctype, headers)


def mutate(draw: Any, value: Any, depth: int = 0) -> Any:
    """Replace, drop or retype parts of a real payload so decoders meet plausible garbage."""
    if depth > 6 or draw(st.integers(0, 9)) == 0:
        return draw(json_value)
    if isinstance(value, dict):
        out = {}
        for key, child in value.items():
            choice = draw(st.integers(0, 9))
            if choice == 0:
                continue
            out[key] = mutate(draw, child, depth + 1) if choice < 4 else child
        return out
    if isinstance(value, list):
        items = [mutate(draw, child, depth + 1) for child in value]
        if items and draw(st.booleans()):
            items.append(items[0])
        return items
    return value


def parsed_samples(provider: str) -> list[tuple[Any, str]]:
    out = []
    for name in all_names(provider):
        body, ctype = sample(provider, name)
        if ctype == FORM:
            out.append((body.decode(), ctype))
            continue
        try:
            out.append((json.loads(body), ctype))
        except ValueError:
            continue
    return out


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("provider", PROVIDERS)
@SETTINGS
@given(body=st.binary(max_size=300))
def test_random_bytes(provider: str, body: bytes) -> None:
    check(provider, body, JSON)
    check(provider, body, FORM)


@pytest.mark.parametrize("provider", PROVIDERS)
@SETTINGS
@given(value=json_value)
def test_random_json(provider: str, value: Any) -> None:
    check(provider, json.dumps(value).encode(), JSON)


@pytest.mark.parametrize("provider", PROVIDERS)
@SETTINGS
@given(data=st.data())
def test_mutated_samples(provider: str, data: st.DataObject) -> None:
    samples = parsed_samples(provider)
    assert samples, f"no samples for {provider}"
    value, ctype = data.draw(st.sampled_from(samples))
    if ctype == FORM:
        pairs = [p.split("=", 1) for p in value.split("&")]
        kept = [p for p in pairs if data.draw(st.integers(0, 5)) > 0]
        tail = data.draw(st.text(max_size=20))
        body = ("&".join("=".join(p) for p in kept) + tail).encode()
        check(provider, body, FORM)
    else:
        check(provider, json.dumps(mutate(data.draw, value)).encode(), JSON)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_sample_decodes_deterministically(provider: str) -> None:
    for name in all_names(provider):
        body, ctype = sample(provider, name)
        check(provider, body, ctype)
