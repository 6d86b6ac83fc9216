"""Scenarios: which webhooks to send, in which order, and what acklog should make of them.

Planning is pure (no I/O): the provider's builder (``PROVIDER.simulator``) supplies the bodies, this module decides the
sequence and the final state each message must end in. The outgoing scenario sends its acks
out of order and repeats one byte for byte, because that is what providers do (invariant 5)
and what the fold must absorb; the expected state is therefore the highest rank reached.
"""

from __future__ import annotations

import itertools
from typing import Literal

import msgspec

from projections import providers
from projections.facts import Direction
from projections.providers.simulation import Ack, Builder, Ids, Msg, Request

Scenario = Literal["incoming", "outgoing", "failure", "instance", "stuck"]
#: what ``all`` runs: every scenario that ends with no ack outstanding
IN_ALL: tuple[Scenario, ...] = ("incoming", "outgoing", "failure", "instance")
#: ``stuck`` leaves acks outstanding on purpose (missed acks): only when asked for by name
SCENARIOS: tuple[Scenario, ...] = (*IN_ALL, "stuck")
ALL = "all"

ACKS: tuple[Ack, ...] = ("sent", "delivered", "read")
#: every ack order except the natural one: the simulator always sends them out of order
SHUFFLED: tuple[tuple[Ack, ...], ...] = tuple(p for p in itertools.permutations(ACKS) if p != ACKS)


class Planned(msgspec.Struct, frozen=True, kw_only=True):
    """One request to send: what it says (for the user) and the body."""

    scenario: Scenario
    label: str
    request: Request
    #: the same bytes were sent before, so acklog will store this as a duplicate
    duplicate: bool = False


class Expected(msgspec.Struct, frozen=True, kw_only=True):
    """The final state a scenario implies for one message in ``rm.messages``."""

    scenario: Scenario
    key: str
    direction: Direction
    state: str
    #: the error code the failure carries, where the provider sends one
    error_code: str | None = None


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    requests: tuple[Planned, ...]
    messages: tuple[Expected, ...]
    #: the instance status the scenario ends in (None: not simulated)
    instance: str | None
    #: steps the provider cannot report, with the reason
    skipped: tuple[str, ...]
    notes: tuple[str, ...]


def short(key: str, width: int = 28) -> str:
    return key if len(key) <= width else key[: width - 1] + "…"


def scenarios(name: str) -> tuple[Scenario, ...]:
    if name == ALL:
        return IN_ALL
    for scenario in SCENARIOS:
        if scenario == name:
            return (scenario,)
    raise ValueError(f"unknown scenario {name!r}; known: {', '.join((*SCENARIOS, ALL))}")


class _Planner:
    def __init__(self, builder: Builder, ids: Ids) -> None:
        self.b = builder
        self.ids = ids
        self.requests: list[Planned] = []
        self.messages: list[Expected] = []
        self.skipped: dict[str, None] = {}  # ordered set: a reason is shown once per run
        self.notes: dict[str, None] = dict.fromkeys(builder.notes)
        self.instance: str | None = None
        self.seen: set[bytes] = set()

    def add(self, scenario: Scenario, label: str, request: Request) -> None:
        # the log deduplicates by event id or by body hash: a body sent before is a duplicate,
        # whether on purpose (a retried ack) or because the provider's report has no ids
        # (Chat API's instance status repeats byte for byte)
        dup = request.body in self.seen
        self.seen.add(request.body)
        self.requests.append(
            Planned(scenario=scenario, label=label, request=request, duplicate=dup)
        )

    def incoming(self) -> None:
        msg, request = self.b.incoming()
        self.add("incoming", f"incoming message {short(msg.key)}", request)
        self.messages.append(
            Expected(scenario="incoming", key=msg.key, direction="incoming", state="received")
        )

    def _announce(self, scenario: Scenario, msg: Msg) -> None:
        reason = self.b.cannot.get("outgoing")
        if reason is not None:
            self.notes[f"no outgoing-message webhook: {reason}"] = None
        else:
            self.add(scenario, f"outgoing message {short(msg.key)}", self.b.outgoing(msg))

    def outgoing(self) -> None:
        msg = self.b.new_outgoing()
        self._announce("outgoing", msg)
        sent: list[Planned] = []
        for status in self.ids.rng.choice(SHUFFLED):
            self.add("outgoing", f"ack {short(msg.key)} → {status}", self.b.ack(msg, status))
            sent.append(self.requests[-1])
        again = self.ids.rng.choice(sent)  # a provider retry: the very same bytes
        self.add("outgoing", f"{again.label} (retried: a duplicate)", again.request)
        self.messages.append(
            Expected(scenario="outgoing", key=msg.key, direction="outgoing", state="read")
        )

    def failure(self) -> None:
        reason = self.b.cannot.get("failure")
        if reason is not None:
            self.skipped[f"failure: {reason}"] = None
            return
        msg = self.b.new_outgoing()
        if not self.b.failure_replaces_outgoing:
            self._announce("failure", msg)
        failed = self.b.failure(msg)
        code = f" ({failed.code})" if failed.code else ""
        self.add("failure", f"failure {short(msg.key)} → not_sent{code}", failed.request)
        self.messages.append(
            Expected(
                scenario="failure",
                key=msg.key,
                direction="outgoing",
                state="not_sent",
                error_code=failed.code,
            )
        )

    def stuck(self) -> None:
        """Acks that never come: one message never reported sent (where the provider reports
        our outgoing messages at all), one reported sent and never delivered."""
        if self.b.cannot.get("outgoing") is None and self.b.announced_state == "sending":
            waiting = self.b.new_outgoing()
            self._announce("stuck", waiting)
            self.messages.append(
                Expected(scenario="stuck", key=waiting.key, direction="outgoing", state="sending")
            )
        half = self.b.new_outgoing()
        self._announce("stuck", half)
        self.add("stuck", f"ack {short(half.key)} → sent (then nothing)", self.b.ack(half, "sent"))
        self.messages.append(
            Expected(scenario="stuck", key=half.key, direction="outgoing", state="sent")
        )

    def instance_cycle(self) -> None:
        reason = self.b.cannot.get("instance")
        if reason is not None:
            self.skipped[f"instance: {reason}"] = None
            return
        self.add("instance", "instance disconnects", self.b.instance(False))
        self.add("instance", "instance reconnects", self.b.instance(True))
        self.instance = "connected"


def plan(
    provider: str, scenario: str = ALL, count: int = 1, seed: int | None = None, url: str = ""
) -> Plan:
    """The requests of ``count`` rounds of ``scenario`` for ``provider``, with fresh ids."""
    found = providers.find(provider)
    if found is None:
        raise ValueError(f"unknown provider {provider!r}; known: {', '.join(providers.PROVIDERS)}")
    chosen = scenarios(scenario)
    ids = Ids(seed)
    planner = _Planner(found.simulator(ids, url), ids)
    steps = {
        "incoming": planner.incoming,
        "outgoing": planner.outgoing,
        "failure": planner.failure,
        "instance": planner.instance_cycle,
        "stuck": planner.stuck,
    }
    for _ in range(max(count, 0)):
        for name in chosen:
            steps[name]()
    return Plan(
        requests=tuple(planner.requests),
        messages=tuple(planner.messages),
        instance=planner.instance,
        skipped=tuple(planner.skipped),
        notes=tuple(planner.notes),
    )
