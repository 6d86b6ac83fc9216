"""Send a planned simulation to a running acklog, signed the way each provider signs.

Requests go one at a time, in plan order: the order *is* the scenario (acks out of order, a
retry after its original, a reconnect after a disconnect), so nothing is sent in parallel.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence

import aiohttp
import msgspec

from projections import providers
from service.cli.simulate.scenarios import ALL, Expected, Planned, plan

#: a freshly added token may be unknown to the server for as long as it caches the channel
#: (service.ingest.channels.ChannelCache, 2 s): the first request retries a 401 for this long
TOKEN_PROPAGATION_S = 3.0
_RETRY_EVERY_S = 0.5


class Sent(msgspec.Struct, frozen=True, kw_only=True):
    """One request as sent, and acklog's answer."""

    scenario: str
    label: str
    raw: str
    status: int
    answer: str
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class SimulationResult(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    provider: str
    scenario: str
    requests: tuple[Sent, ...]
    #: per simulated message, the final state the scenario implies
    messages: tuple[Expected, ...]
    #: the instance status the scenario ends in (None when the provider has no such events)
    instance: str | None
    skipped: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.requests)

    def states(self) -> dict[str, str]:
        return {m.key: m.state for m in self.messages}


def signature_headers(provider: str, secret: str, url: str, body: bytes) -> dict[str, str]:
    """The headers the provider itself would add; empty for providers that do not sign."""
    signature = providers.get(provider).signature
    return {} if signature is None else signature.headers(secret, url, body)


def _answer(status: int, text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:80]
    if not isinstance(data, dict):
        return text.strip()[:80]
    if data.get("status") == "duplicate":
        return f"duplicate of #{data.get('duplicate_of')}"
    if data.get("status") == "stored":
        return f"stored #{data.get('position')}"
    if "result" in data:  # a provider's own answer (PROVIDER.answer): {"result", "id"}
        return f"{data['result']} id={data.get('id')}"
    return str(data.get("detail") or data.get("error") or text)[:120]


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], retry: bool
) -> tuple[int, str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TOKEN_PROPAGATION_S
    while True:
        async with session.post(url, data=body, headers=headers) as resp:
            text = await resp.text()
            if resp.status != 401 or not retry or loop.time() >= deadline:
                return resp.status, text
        await asyncio.sleep(_RETRY_EVERY_S)


async def simulate(
    base_url: str,
    channel: str,
    provider: str,
    token: str | None,
    scenario: str = ALL,
    count: int = 1,
    secrets: Sequence[str] = (),
    seed: int | None = None,
    on_sent: Callable[[Sent], None] | None = None,
) -> SimulationResult:
    """POST ``count`` rounds of ``scenario`` to ``base_url``/hooks/``channel``.

    ``token`` goes in ``?token=`` (None: rely on the signature alone); with ``secrets`` a
    signing provider's requests are signed with the first one, as the provider would.
    """
    url = f"{base_url.rstrip('/')}/hooks/{channel}"
    target = f"{url}?token={token}" if token else url
    planned = plan(provider, scenario, count, seed, url=url)
    sent: list[Sent] = []
    async with aiohttp.ClientSession(headers={"User-Agent": "acklog-simulate"}) as session:
        for step in planned.requests:
            retry = token is not None and not sent  # only a new token needs time to spread
            sent.append(await _send(session, provider, target, step, secrets, retry=retry))
            if on_sent is not None:
                on_sent(sent[-1])
    return SimulationResult(
        channel=channel,
        provider=provider,
        scenario=scenario,
        requests=tuple(sent),
        messages=planned.messages,
        instance=planned.instance,
        skipped=planned.skipped,
        notes=planned.notes,
    )


async def _send(
    session: aiohttp.ClientSession,
    provider: str,
    url: str,
    step: Planned,
    secrets: Sequence[str],
    retry: bool,
) -> Sent:
    body = step.request.body
    headers = {"Content-Type": step.request.content_type}
    if secrets:
        headers |= signature_headers(provider, secrets[0], url, body)
    status, text = await _post(session, url, body, headers, retry)
    return Sent(
        scenario=step.scenario,
        label=step.label,
        raw=step.request.raw,
        status=status,
        answer=_answer(status, text),
        duplicate=step.duplicate,
    )
