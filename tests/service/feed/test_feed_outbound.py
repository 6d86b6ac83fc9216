"""The feed's outbound guard judges an address by what it reaches: IPv6 forms that carry an
IPv4 address (mapped, compatible, translated, 6to4, NAT64, Teredo) and numeric IPv4 spellings
are refused at ``subscriptions add`` / ``update`` (a real ``acklog`` process) and at connect
time, by name or literal, while a loopback receiver sees nothing (security issue #26)."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
import asyncpg
import msgspec
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from eventstore.append import write_batch
from projections.feed import subscriptions as subs
from service.feed import outbound
from tests.service.feed.test_feed_delivery import CHANGES, FAST, feed_running
from tests.support.payloads import event, meta_status
from tests.support.procs import command_output as acklog
from tests.support.procs import free_port

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
POLICY = outbound.Policy()

#: every IPv6 form of the issue, and what it carries: refused as that IPv4 is
CARRIERS = {
    "compatible": ("::a9fe:a9fe", "169.254.169.254"),
    "compatible loopback": ("::7f00:1", "127.0.0.1"),
    "translated (RFC 2765)": ("::ffff:0:a9fe:a9fe", "169.254.169.254"),
    "6to4": ("2002:a9fe:a9fe::", "169.254.169.254"),
    "6to4 private": ("2002:c0a8:101::1", "192.168.1.1"),
    "NAT64 well-known": ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
    "NAT64 well-known private": ("64:ff9b::a00:1", "10.0.0.1"),
    "NAT64 local-use (RFC 8215)": ("64:ff9b:1::a9fe:a9fe", "169.254.169.254"),
    "Teredo client": ("2001:0:4136:e378:8000:63bf:5601:5601", "169.254.169.254"),
    "Teredo server": ("2001:0:a9fe:a9fe::f7f7:f7f7", "169.254.169.254"),
    "mapped": ("::ffff:a9fe:a9fe", "169.254.169.254"),
}

#: numeric spellings of an IPv4 address that the resolver would map onto one
NUMERIC = ["2130706433", "0x7f.1", "127.1", "0177.0.0.1", "0x7f000001", "0xa9fea9fe", "1.2.3.04"]

#: forms that held before and must still be refused
HELD = [
    "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.1/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fc00::1]/",
    "http://[fec0::1]/",
    "http://user:pw@8.8.8.8/",
    "ftp://8.8.8.8/",
]

ALLOWED = [
    "http://[2001:4860:4860::8888]/",
    "http://8.8.8.8/",
    "http://[64:ff9b::808:808]/",  # DNS64 for 8.8.8.8
    "http://[2002:808:808::1]/",  # 6to4 from 8.8.8.8
    "http://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/",  # Teredo, client 8.8.8.8
    "http://127.0.0.1:9/hook",  # loopback URLs reach loopback
    "http://[::1]:9/hook",
    "http://[::ffff:127.0.0.1]:9/hook",
]


@pytest.mark.parametrize(("form", "carried"), CARRIERS.values(), ids=list(CARRIERS))
async def test_every_carrier_form_is_refused(form: str, carried: str) -> None:
    with pytest.raises(outbound.Refused, match=re.escape(carried)):
        await outbound.check_url(f"http://[{form}]/", POLICY)
    with pytest.raises(outbound.Refused, match=re.escape(carried)):
        outbound.check_address("hook.example", form, POLICY)  # a DNS answer
    with pytest.raises(outbound.Refused, match=re.escape(carried)):
        outbound.check_dialled(form, POLICY)  # a socket about to be opened


@pytest.mark.parametrize("host", NUMERIC)
async def test_numeric_ipv4_spellings_are_refused(host: str) -> None:
    with pytest.raises(outbound.Refused, match="four decimal numbers"):
        await outbound.check_url(f"http://{host}/hook", POLICY)


@pytest.mark.parametrize("url", HELD)
async def test_forms_that_held_still_do(url: str) -> None:
    with pytest.raises(outbound.Refused):
        await outbound.check_url(url, POLICY)


@pytest.mark.parametrize("url", ALLOWED)
async def test_public_and_loopback_urls_pass(url: str) -> None:
    await outbound.check_url(url, POLICY)


def test_the_allow_list_allows_what_is_reached_not_the_carrier() -> None:
    meta = outbound.Policy(allow_cidrs=("169.254.0.0/16",))
    outbound.check_address("hook.example", "2002:a9fe:a9fe::", meta)
    outbound.check_address("hook.example", "::a9fe:a9fe", meta)
    carrier = outbound.Policy(allow_cidrs=("2002::/16", "64:ff9b:1::/48"))
    for form in ("2002:a9fe:a9fe::", "64:ff9b:1::a9fe:a9fe"):
        with pytest.raises(outbound.Refused, match=re.escape("169.254.169.254")):
            outbound.check_address("hook.example", form, carrier)
    outbound.check_address("hook.example", "64:ff9b:1::808:808", carrier)
    off = outbound.Policy(deny_private=False)
    for form, _ in CARRIERS.values():
        outbound.check_address("hook.example", form, off)


# -- properties: for any IPv4 carried by any of the prefixes ---------------------------------

DENIED_V4 = [n for n in outbound.DENIED if n.version == 4]


def denied_v4() -> st.SearchStrategy[V4]:
    return st.sampled_from(DENIED_V4).flatmap(lambda n: st.ip_addresses(network=n))  # type: ignore[arg-type,return-value]


def public_v4() -> st.SearchStrategy[V4]:
    return st.ip_addresses(v=4).filter(lambda a: not any(a in n for n in DENIED_V4))  # type: ignore[return-value]


Embed = Callable[[V4, int, V4], V6]


#: each carrier: (IPv4, random bits for the rest, another IPv4) -> the IPv6 address
EMBEDDINGS: dict[str, Embed] = {
    "compatible ::/96": lambda a, r, b: V6(int(a)),
    "mapped ::ffff:0:0/96": lambda a, r, b: V6(0xFFFF << 32 | int(a)),
    "translated ::ffff:0:0:0/96": lambda a, r, b: V6(0xFFFF << 48 | int(a)),
    "6to4 2002::/16": lambda a, r, b: V6(0x2002 << 112 | int(a) << 80 | r % (1 << 80)),
    "NAT64 64:ff9b::/96": lambda a, r, b: V6(0x64FF9B << 96 | int(a)),
    "NAT64 64:ff9b:1::/48": lambda a, r, b: V6(0x64FF9B0001 << 80 | (r % (1 << 48)) << 32 | int(a)),
    "Teredo client": lambda a, r, b: V6(
        0x20010000 << 96 | int(b) << 64 | (r % (1 << 32)) << 32 | int(a) ^ 0xFFFFFFFF
    ),
    "Teredo server": lambda a, r, b: V6(
        0x20010000 << 96 | int(a) << 64 | (r % (1 << 32)) << 32 | int(b) ^ 0xFFFFFFFF
    ),
}
ANY_BITS = st.integers(min_value=0, max_value=(1 << 80) - 1)
PROPERTIES = settings(max_examples=300, deadline=None)


@PROPERTIES
@given(st.sampled_from(sorted(EMBEDDINGS)), denied_v4(), ANY_BITS, public_v4())
@example("compatible ::/96", V4("169.254.169.254"), 0, V4("8.8.8.8"))
@example("6to4 2002::/16", V4("127.0.0.1"), 0, V4("8.8.8.8"))
def test_any_denied_ipv4_in_any_carrier_is_refused(
    carrier: str, inside: V4, bits: int, other: V4
) -> None:
    form = EMBEDDINGS[carrier](inside, bits, other)
    assert inside in outbound.embedded(form) or int(form) <= 1  # :: and ::1 are themselves
    # as a DNS answer for a name, whatever the carrier
    with pytest.raises(outbound.Refused):
        outbound.check_address("hook.example", str(form), POLICY)
    # as a literal URL and as a dialled socket: a loopback address is a loopback URL's own
    if outbound.loopback_host(str(form)):
        return
    with pytest.raises(outbound.Refused):
        asyncio.run(outbound.check_url(f"http://[{form}]/hook", POLICY))
    with pytest.raises(outbound.Refused):
        outbound.check_dialled(str(form), POLICY)


@PROPERTIES
@given(st.sampled_from(sorted(set(EMBEDDINGS) - {"NAT64 64:ff9b:1::/48"})), public_v4(),
       ANY_BITS, public_v4())  # fmt: skip
def test_a_public_ipv4_in_a_global_carrier_is_allowed(
    carrier: str, inside: V4, bits: int, other: V4
) -> None:
    form = EMBEDDINGS[carrier](inside, bits, other)
    assume(int(form) > 1)  # :: and ::1 are themselves
    outbound.check_address("hook.example", str(form), POLICY)
    outbound.check_dialled(str(form), POLICY)


@PROPERTIES
@given(st.ip_addresses(network="2400::/6"))
def test_plain_global_ipv6_is_allowed(address: V6) -> None:
    assert outbound.embedded(address) == ()
    outbound.check_address("hook.example", str(address), POLICY)
    outbound.check_dialled(str(address), POLICY)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=0xFFFFFFFF), st.sampled_from(["hex", "int", "octal"]))
def test_any_numeric_spelling_of_an_ipv4_is_refused(value: int, style: str) -> None:
    spelt = {"hex": hex(value), "int": str(value), "octal": "0" + oct(value)[2:]}[style]
    with pytest.raises(outbound.Refused, match="four decimal numbers"):
        outbound.parse(f"http://{spelt}/hook")


# -- through a real ``acklog`` process ------------------------------------------------------


async def test_cli_refuses_every_form_at_add_and_update(dsn: str, conn: asyncpg.Connection) -> None:
    for form, carried in CARRIERS.values():
        code, out = await acklog(dsn, "subscriptions", "add", "x", "--url", f"http://[{form}]/")
        assert code == 2 and "error:" in out and carried in out, (form, out)
    for host in ("2130706433", "0x7f.1"):
        code, out = await acklog(dsn, "subscriptions", "add", "x", "--url", f"http://{host}/")
        assert code == 2 and "four decimal numbers" in out, (host, out)
    assert await subs.list_all(conn) == []
    await subs.add(conn, "crm", "http://127.0.0.1:9/hook")
    code, out = await acklog(
        dsn, "subscriptions", "update", "crm", "--url", "http://[::ffff:0:7f00:1]:9/hook"
    )
    assert code == 2 and "carries 127.0.0.1" in out, out
    assert (await subs.get(conn, "crm")).url == "http://127.0.0.1:9/hook"


# -- at connect time, against receivers on loopback -----------------------------------------


class FixedDNS(AbstractResolver):
    """DNS answers the test chooses (real addresses, as a DNS server could give them)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.answers:
            raise OSError(f"{host}: no such name")
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in self.answers[host]
        ]

    async def close(self) -> None:
        return None


class Loopback:
    """One port on 127.0.0.1 and, where this machine has it, on ::1: records every request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[str] = []
        self.hosts = ["127.0.0.1"]
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        return web.Response(text="ok")

    async def start(self) -> Loopback:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        if socket.has_ipv6:
            try:
                await web.TCPSite(self.runner, "::1", self.port).start()
                self.hosts.append("::1")
            except OSError:
                pass  # no IPv6 loopback here (or the port is taken there)
        return self


@pytest.fixture
async def loopback() -> AsyncIterator[Loopback]:
    lo = await Loopback().start()
    try:
        yield lo
    finally:
        assert lo.runner is not None
        await lo.runner.cleanup()


def teredo_client(v4: str) -> str:
    return str(
        V6(0x20010000 << 96 | 0x4136E378 << 64 | 0x800063BF << 32 | int(V4(v4)) ^ 0xFFFFFFFF)
    )


#: names whose DNS answers are loopback, spelt in each carrier
LOOPBACK_ANSWERS = {
    "mapped.test": ["::ffff:127.0.0.1"],  # a dual-stack socket dials 127.0.0.1 itself
    "compatible.test": ["::7f00:1"],
    "translated.test": ["::ffff:0:7f00:1"],
    "sixtofour.test": ["2002:7f00:1::"],
    "nat64.test": ["64:ff9b::7f00:1"],
    "nat64local.test": ["64:ff9b:1::7f00:1"],
    "teredo.test": [teredo_client("127.0.0.1")],
    "ipv6.test": ["::1"],
    "mixed.test": ["2001:4860:4860::8888", "::7f00:1"],
}


async def test_the_dns_route_reaches_the_receiver_without_the_guard(loopback: Loopback) -> None:
    """The control: the same answer, unguarded, does reach the loopback receiver."""
    dns = FixedDNS({"mapped.test": ["::ffff:127.0.0.1"]})
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=dns)) as http,
        http.post(f"http://mapped.test:{loopback.port}/hook", data=b"{}") as resp,
    ):
        assert resp.status == 200
    assert loopback.requests == ["/hook"]


async def test_names_resolving_to_carried_loopback_are_never_sent_to(
    dsn: str, conn: asyncpg.Connection, loopback: Loopback
) -> None:
    for name in LOOPBACK_ANSWERS:
        await subs.add(
            conn, name.split(".")[0], f"http://{name}:{loopback.port}/hook", events=CHANGES
        )
    await write_batch(conn, [event(meta_status("wamid.x", "sent"))])
    settings = msgspec.structs.replace(FAST, attempts=1)

    async def all_dead() -> bool:
        return len(await subs.dead_letters(conn)) == len(LOOPBACK_ANSWERS)

    async with feed_running(dsn, settings, FixedDNS(LOOPBACK_ANSWERS)) as delivery:
        async with asyncio.timeout(30):
            await delivery.until(all_dead)
    assert loopback.requests == []
    for s in await subs.list_all(conn):
        (attempt,) = await subs.recent_attempts(conn, s.id)
        assert attempt.outcome == "refused" and attempt.error, (s.name, attempt)
        assert "127.0.0.1" in attempt.error or "::1" in attempt.error, attempt.error


#: literal URLs stored around the operator's check (a row written before the fix, or by hand)
LITERALS = ["::7f00:1", "::ffff:0:7f00:1", "2002:7f00:1::", "64:ff9b::7f00:1",
            teredo_client("127.0.0.1"), "::a9fe:a9fe"]  # fmt: skip


async def test_literal_carriers_in_stored_rows_are_refused_at_connect(
    dsn: str, conn: asyncpg.Connection, loopback: Loopback
) -> None:
    for i, form in enumerate(LITERALS):
        await subs.add(conn, f"s{i}", f"http://[{form}]:{loopback.port}/hook", events=CHANGES)
    await write_batch(conn, [event(meta_status("wamid.x", "sent"))])
    settings = msgspec.structs.replace(FAST, attempts=1)

    async def all_dead() -> bool:
        return len(await subs.dead_letters(conn)) == len(LITERALS)

    async with feed_running(dsn, settings) as delivery, asyncio.timeout(30):
        await delivery.until(all_dead)
    assert loopback.requests == []
    for s in await subs.list_all(conn):
        (attempt,) = await subs.recent_attempts(conn, s.id)
        assert attempt.outcome == "refused" and "not dialled" in (attempt.error or ""), (
            s.url,
            attempt,
        )


async def test_the_socket_factory_alone_refuses_a_carried_answer(loopback: Loopback) -> None:
    """Below the resolver's guard: a DNS answer that got past it is still not dialled."""
    dns = FixedDNS({"compatible.test": ["::7f00:1"], "sixtofour.test": ["2002:7f00:1::"]})
    connector = aiohttp.TCPConnector(resolver=dns, socket_factory=outbound.guarded_socket(POLICY))
    async with aiohttp.ClientSession(connector=connector) as http:
        for name in dns.answers:
            with pytest.raises(aiohttp.ClientConnectorError) as caught:
                await http.post(f"http://{name}:{loopback.port}/hook", data=b"{}")
            assert outbound.refused(caught.value), caught.value
            assert "carries 127.0.0.1" in str(caught.value)
    assert loopback.requests == []
