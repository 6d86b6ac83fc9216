"""The spellings of one phone number (``projections.phones``): whatever way a user types it,
whatever way a provider sends it, it matches and is masked; another number never is."""

from __future__ import annotations

import base64
import json
import re

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.phones import InvalidPhone, parse

#: (region, a valid mobile there) to draw numbers from: Brazil's ninth digit, Mexico's 521,
#: Argentina's 549, and countries without a quirk
REGIONS = ["BR", "MX", "AR", "US", "DE", "IN", "GB", "NL", "RU", "IL", "ID", "ZA"]


@st.composite
def numbers(draw: st.DrawFn) -> phonenumbers.PhoneNumber:
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None
    digits = str(example.national_number)
    # keep the example's first digits (the area and the mobile prefix), draw the rest
    keep = max(len(digits) - 6, 2)
    tail = draw(st.text("0123456789", min_size=len(digits) - keep, max_size=len(digits) - keep))
    number = phonenumbers.parse(f"+{example.country_code}{digits[:keep]}{tail}", None)
    if not phonenumbers.is_valid_number(number):
        number = example
    return number


def typed(number: phonenumbers.PhoneNumber, style: int) -> str:
    """A way a person types the number."""
    f = phonenumbers.PhoneNumberFormat
    e164 = phonenumbers.format_number(number, f.E164)
    return [
        phonenumbers.format_number(number, f.INTERNATIONAL),
        e164,
        e164[1:],
        phonenumbers.format_number(number, f.RFC3966).removeprefix("tel:"),
        f"whatsapp:{e164}",
        f"{e164[1:]}@c.us",
        f"{e164[1:]}@s.whatsapp.net",
        " " + phonenumbers.format_number(number, f.INTERNATIONAL).replace(" ", ".") + " ",
        "00 " + phonenumbers.format_number(number, f.INTERNATIONAL)[1:],
    ][style]


def provider_bodies(digits: str) -> list[bytes]:
    """How providers carry the number (the shapes of ``../shared/samples``)."""
    return [
        json.dumps({"contacts": [{"wa_id": digits}], "messages": [{"from": digits}]}).encode(),
        json.dumps({"statuses": [{"recipient_id": digits}]}).encode(),
        json.dumps(
            {"payload": {"id": f"true_{digits}@c.us_3EB0AF", "to": f"{digits}@c.us"}}
        ).encode(),
        json.dumps({"key": {"remoteJid": f"{digits}@s.whatsapp.net"}}).encode(),
        f"From=whatsapp%3A%2B{digits}&To=whatsapp%3A%2B14155238886".encode(),
        json.dumps({"phone": digits, "chatId": f"{digits}@c.us"}).encode(),
        json.dumps({"remoteJid": f"{digits}-1612345678@g.us"}).encode(),
        json.dumps({"id": wamid(digits)}).encode(),
    ]


def wamid(digits: str) -> str:
    """A Meta message id: base64 of a record that holds the recipient's number."""
    record = b"\x1c\x18" + bytes([len(digits)]) + digits.encode() + b"\x15\x02\x00\x12\x18\x14"
    return "wamid." + base64.b64encode(record + b"3A4A6599AEE03810144F\x00").decode()


def unwrapped(body: bytes) -> bytes:
    """``body`` with each wamid's record decoded beside it."""
    records = [
        base64.b64decode(t + b"=" * (-len(t) % 4))
        for t in re.findall(rb"wamid\.([A-Za-z0-9+/]+)", body)
    ]
    return b"\n".join([body, *records])


def e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


@settings(max_examples=300, deadline=None)
@given(numbers(), st.integers(0, 8), st.integers(0, 7))
def test_any_spelling_typed_masks_every_spelling_sent(
    number: phonenumbers.PhoneNumber, style: int, shown: int
) -> None:
    spellings = parse(typed(number, style))
    assert e164(number) in spellings.digits
    for digits in spellings.digits:
        for body in provider_bodies(digits):
            masked = spellings.mask(body)
            assert digits.encode() not in unwrapped(masked) and len(masked) == len(body)
            if body.startswith(b"{"):
                json.loads(masked)  # still JSON
    text = f"call me on {typed(number, shown)} please".encode()
    masked = spellings.mask(text)
    assert masked != text and len(masked) == len(text)
    assert not re.search(rb"[1-9]", masked)  # every digit of the number is now 0


@settings(max_examples=300, deadline=None)
@given(numbers(), numbers(), st.integers(0, 8))
def test_another_number_never_matches(
    one: phonenumbers.PhoneNumber, other: phonenumbers.PhoneNumber, style: int
) -> None:
    mine = parse(typed(one, 0))
    theirs = parse(typed(other, 0))
    if set(mine.digits) & set(theirs.digits):
        return  # the same line (Brazil's ninth digit, Mexico's 521…)
    for digits in theirs.digits:
        for body in provider_bodies(digits):
            assert mine.mask(body) == body
    text = f"call me on {typed(other, style)} please".encode()
    assert mine.mask(text) == text


def test_brazilian_mobiles_match_with_and_without_the_ninth_digit() -> None:
    assert parse("+55 11 98888-7777").digits == ("5511988887777", "551188887777")
    assert parse("551188887777@c.us").digits == ("551188887777", "5511988887777")
    assert parse("+52 1 55 1234 5678").digits == ("525512345678", "5215512345678")
    assert parse("+54 9 11 1234-5678").digits == ("5491112345678", "541112345678")
    s = parse("+55 11 98888-7777")
    assert s.mask(b'{"chatId":"551188887777@c.us"}') == b'{"chatId":"000000000000@c.us"}'
    assert s.mask(b'"5511988887777-1612345678@g.us"') == b'"0000000000000-1612345678@g.us"'
    # a bare JSON number stays a JSON number
    assert s.mask(b'{"phone": 5511988887777, "to":[551188887777]}') == (
        b'{"phone": 1000000000000, "to":[100000000000]}'
    )
    # a longer run of digits is another thing (an id, a timestamp): untouched
    assert s.mask(b"155119888877771") == b"155119888877771"
    assert "5511" not in repr(s)
    # Meta's message ids hold the number in base64 (the docs' sample: +1 650 387 9439)
    meta = b"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    assert parse("+1 650 387 9439").mask(meta) == (
        b"wamid.HBgLMDAwMDAwMDAwMDAVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    )
    assert parse("+1 650 387 9438").mask(meta) == meta


@pytest.mark.parametrize(
    "text", ["", "abc", "+", "12", "+99 123", "5511988887777; DROP", "+55 11 98888-7777 ext 2"]
)
def test_what_is_not_a_number_is_refused(text: str) -> None:
    with pytest.raises(InvalidPhone):
        parse(text)
