"""``service.ingest.auth`` without HTTP: every rule of ``authenticate`` and the failure limiter, fast
enough for mutation testing (``make mutate``). Expected signatures come from outside the
project (RFC 4231, Twilio's RequestValidator), never from ``service.ingest.auth`` itself."""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from multidict import CIMultiDict
from twilio.request_validator import RequestValidator

from eventstore.channels import Channel, token_hash
from service.http.limiter import FailureLimiter
from service.ingest.auth import authenticate, token_matches

RFC4231_KEY = "Jefe"
RFC4231_DATA = b"what do ya want for nothing?"
RFC4231_SHA256 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
RFC4231_SHA512 = (
    "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d"
    "034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
)


def channel(provider: str = "wamm", **kw: object) -> Channel:
    base: dict[str, object] = {
        "name": "c",
        "provider": provider,
        "token_hashes": (token_hash("old-token"), token_hash("the-token")),
        "secrets": ("old-secret", RFC4231_KEY),
    }
    return Channel(**(base | kw))  # type: ignore[arg-type]


def auth(
    ch: Channel,
    *,
    query: str | None = None,
    authorization: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = RFC4231_DATA,
    url: str = "",
) -> str | None:
    return authenticate(
        ch,
        query_token=query,
        authorization=authorization,
        headers=CIMultiDict(headers or []),
        body=body,
        url=url,
    )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_tokens_any_of_several_in_query_or_bearer() -> None:
    ch = channel()
    assert token_matches(ch, "the-token") and token_matches(ch, "old-token")
    assert not token_matches(ch, "the-token ")
    assert auth(ch, query="the-token") is None
    assert auth(ch, query="old-token") is None
    assert auth(ch, authorization="Bearer the-token") is None
    assert auth(ch, authorization="bearer  the-token ") is None
    assert auth(ch, query="nope") == "invalid credentials"
    assert auth(ch, authorization="Bearer nope") == "invalid credentials"
    assert auth(ch, authorization="Token the-token") == "invalid credentials"
    assert auth(ch, query="") is not None
    missing = auth(ch)
    assert missing is not None and missing.startswith("missing credentials")


def test_basic_auth_user_and_password() -> None:
    assert auth(channel(), authorization=basic("anyone", "the-token")) is None
    with_user = channel(basic_user="qik")
    assert auth(with_user, authorization=basic("qik", "the-token")) is None
    assert auth(with_user, authorization="basic " + basic("qik", "the-token")[6:]) is None
    assert auth(with_user, authorization=basic("mallory", "the-token")) == "invalid credentials"
    assert auth(with_user, authorization=basic("qik", "nope")) == "invalid credentials"
    assert auth(with_user, authorization=basic("qik", "the-token:x")) == "invalid credentials"
    assert auth(with_user, authorization="Basic abc") == "malformed Basic credentials"
    not_utf8 = "Basic " + base64.b64encode(b"qik:\xff\xfe").decode()
    assert auth(with_user, authorization=not_utf8) == "malformed Basic credentials"


def test_meta_signature_known_answer_with_rotated_secrets() -> None:
    ch = channel("meta")
    good = [("X-Hub-Signature-256", "sha256=" + RFC4231_SHA256)]
    assert auth(ch, headers=good) is None
    assert auth(ch, headers=[("X-Hub-Signature-256", "sha256=" + RFC4231_SHA256.upper())]) is None
    assert auth(ch, headers=[("X-Hub-Signature-256", " sha256=" + RFC4231_SHA256 + " ")]) is None
    for forged in (RFC4231_SHA256, "sha1=" + RFC4231_SHA256, "sha256=" + RFC4231_SHA256[:-1]):
        reason = auth(ch, headers=[("X-Hub-Signature-256", forged)], query="the-token")
        assert reason is not None and "signature" in reason
    # every copy must verify
    both = [*good, ("X-Hub-Signature-256", "sha256=" + "0" * 64)]
    assert auth(ch, headers=both) is not None
    assert auth(ch, headers=[*good, *good]) is None
    assert auth(channel("meta", secrets=("other",)), headers=good) is not None
    assert auth(channel("meta", secrets=()), headers=good) is not None


def test_waha_signature_known_answers_and_algorithms() -> None:
    ch = channel("waha")
    assert auth(ch, headers=[("X-Webhook-Hmac", RFC4231_SHA512)]) is None  # sha512 by default
    sha512 = [("X-Webhook-Hmac", RFC4231_SHA512), ("X-Webhook-Hmac-Algorithm", " SHA512 ")]
    assert auth(ch, headers=sha512) is None
    assert auth(ch, headers=[("X-Webhook-Hmac", RFC4231_SHA512.upper())]) is None
    sha256 = [("X-Webhook-Hmac", RFC4231_SHA256), ("X-Webhook-Hmac-Algorithm", "sha256")]
    assert auth(ch, headers=sha256) is None
    for algorithm in ("md5", "sha1", ""):
        bad = [("X-Webhook-Hmac", RFC4231_SHA512), ("X-Webhook-Hmac-Algorithm", algorithm)]
        assert auth(ch, headers=bad, query="the-token") is not None
    assert auth(ch, headers=[("X-Webhook-Hmac", RFC4231_SHA256)]) is not None


def test_twilio_signature_by_twilios_validator() -> None:
    ch = channel("twilio", secrets=("auth-token",))
    params = {"MessageSid": "SM1", "MessageStatus": "read", "To": "whatsapp:+1", "A": "", "b": "x"}
    body = urllib.parse.urlencode(params).encode()
    url = "https://acklog.example.com/hooks/c?x=1"
    sig = RequestValidator("auth-token").compute_signature(url, params)
    assert auth(ch, headers=[("X-Twilio-Signature", sig)], body=body, url=url) is None
    assert auth(ch, headers=[("X-Twilio-Signature", f" {sig} ")], body=body, url=url) is None
    assert auth(ch, headers=[("X-Twilio-Signature", sig)], body=body, url=url + "2") is not None
    assert auth(ch, headers=[("X-Twilio-Signature", sig)], body=body + b"&c=1", url=url) is not None


def test_a_provider_that_signs_nothing_ignores_signature_headers() -> None:
    ch = channel("wamm")
    forged = [("X-Hub-Signature-256", "sha256=" + "0" * 64), ("X-Webhook-Hmac", "00")]
    assert auth(ch, headers=forged, query="the-token") is None
    assert auth(ch, headers=forged) is not None  # and they authenticate nothing either
    # another provider's header is no signature for this one
    assert auth(channel("meta"), headers=[("X-Webhook-Hmac", RFC4231_SHA512)]) is not None


def test_failure_limiter_sliding_minute() -> None:
    lim = FailureLimiter(per_minute=3)
    assert lim.blocked_for("a", now=0.0) == 0.0
    for t in (0.0, 1.0, 2.0):
        lim.failed("a", now=t)
    assert lim.blocked_for("a", now=2.0) == pytest.approx(58.0)
    assert lim.blocked_for("b", now=2.0) == 0.0
    assert lim.blocked_for("a", now=59.5) == pytest.approx(1.0)  # never less than a second
    assert lim.blocked_for("a", now=59.0) == pytest.approx(1.0)
    assert lim.blocked_for("a", now=30.0) == pytest.approx(30.0)
    lim.failed("a", now=30.0)  # the limiter keeps the last three: 1, 2, 30
    assert lim.blocked_for("a", now=30.0) == pytest.approx(60.0 - (30.0 - 1.0))
    assert lim.blocked_for("a", now=61.0) == 0.0  # 1.0 left the minute: two remain


def test_failure_limiter_two_failures_below_limit_and_bounded_memory() -> None:
    lim = FailureLimiter(per_minute=2, max_clients=2)
    lim.failed("a", now=0.0)
    assert lim.blocked_for("a", now=0.0) == 0.0
    lim.failed("a", now=0.0)
    assert lim.blocked_for("a", now=0.0) == pytest.approx(60.0)
    lim.failed("b", now=0.0)
    lim.failed("a", now=0.0)  # a is the most recent again
    lim.failed("c", now=0.0)  # evicts b, the least recently failing
    assert lim.blocked_for("a", now=0.0) > 0
    lim.failed("b", now=0.0)
    assert lim.blocked_for("b", now=0.0) == 0.0  # b started over: one failure only
    one = FailureLimiter(per_minute=1)
    one.failed("x", now=10.0)
    assert one.blocked_for("x", now=10.0) == pytest.approx(60.0)
    zero = FailureLimiter(per_minute=0)
    zero.failed("x", now=0.0)
    assert zero.blocked_for("x", now=0.0) >= 1.0


def test_exact_reasons() -> None:
    ch = channel("meta")
    forged = [("X-Hub-Signature-256", "sha256=" + "0" * 64)]
    assert auth(ch, headers=forged) == "signature does not match any of the channel's secrets"
    assert auth(ch) == (
        "missing credentials: pass ?token=…, a Bearer token, Basic auth or a signature"
    )


def test_the_signing_secret_may_be_any_of_the_channels() -> None:
    good = [("X-Hub-Signature-256", "sha256=" + RFC4231_SHA256)]
    assert auth(channel("meta", secrets=(RFC4231_KEY, "newer")), headers=good) is None
    assert auth(channel("meta", secrets=("older", RFC4231_KEY, "newer")), headers=good) is None


def test_a_forged_copy_fails_in_either_order() -> None:
    good = ("X-Hub-Signature-256", "sha256=" + RFC4231_SHA256)
    forged = ("X-Hub-Signature-256", "sha256=" + "0" * 64)
    assert auth(channel("meta"), headers=[forged, good]) is not None
    assert auth(channel("meta"), headers=[good, forged]) is not None


def test_basic_password_may_contain_a_colon() -> None:
    ch = channel(basic_user="qik", token_hashes=(token_hash("pa:ss"),))
    assert auth(ch, authorization=basic("qik", "pa:ss")) is None


def test_twilio_body_that_is_not_utf8_is_refused_not_raised() -> None:
    ch = channel("twilio", secrets=("auth-token",))
    reason = auth(ch, headers=[("X-Twilio-Signature", "AAAA")], body=b"A=\xff\xfe", url="u")
    assert reason == "signature does not match any of the channel's secrets"


def test_waha_helper_defaults_to_sha512() -> None:
    from projections.providers.waha import signature as waha_signature

    assert waha_signature(RFC4231_KEY, RFC4231_DATA) == RFC4231_SHA512


def test_the_limiter_reads_the_clock_itself() -> None:
    lim = FailureLimiter(per_minute=1)
    lim.failed("z")
    assert 1.0 <= lim.blocked_for("z") <= 60.0
