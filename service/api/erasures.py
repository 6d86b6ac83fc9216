"""``POST /v1/erasures``: erase one person's phone number everywhere (docs/erasure.md).

The body is ``{"phone": "+55 11 98888-7777"}``, the number in any spelling with its country
code. The answer is the audit record (``projections.erasure.Erased``): 200 with ``matched``
true when something was masked, 200 with ``matched`` false when the number was found nowhere
(the request is recorded all the same), 400 naming ``phone`` when it is not a phone number.
The audit names who asked: ``api:`` and the name of the API key the request carried
(``api:configured`` for the configured key).
With an archive store (``ACKLOG_ARCHIVE_URL``) the archives holding the number are rewritten
too; when the store fails, the database is erased all the same and the answer is 503 (with
``Retry-After``) carrying the same record with ``"archives": "pending"``: the erasure is not
complete until the request is sent again and answers 200.
The erasure rebuilds the read models, so it takes as long as ``acklog rebuild``: the route
has no query timeout.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from projections import erasure
from service.core.apikey import CONFIGURED
from service.core.config import SETTINGS
from service.core.database import DSN
from service.http.errors import BadParameter
from service.http.responses import json_response

PATH = "/erasures"

#: the request is small; a bigger body is not a phone number
MAX_BODY = 4096

#: the name of the API key the request carried (set by the API's guard)
KEY_NAME = web.RequestKey("api_key_name", str)


class ErasureRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Whose data to erase."""

    #: the phone number with its country code, in any spelling
    phone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


_decoder = msgspec.json.Decoder(ErasureRequest)


async def create(request: web.Request) -> web.Response:
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise BadParameter("phone", f"the body is larger than {MAX_BODY} bytes")
    try:
        wanted = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadParameter(
            "phone", f'send a JSON object {{"phone": "+55 11 98888-7777"}}: {exc}'
        ) from None
    try:
        number = erasure.parse(wanted.phone)
    except erasure.InvalidPhone as exc:
        raise BadParameter("phone", str(exc)) from None
    name = request.get(KEY_NAME)
    by = "api:configured" if name == CONFIGURED else f"api:{name}"
    workers = request.config_dict[SETTINGS].rebuild_workers or None
    done = await erasure.erase(
        request.config_dict[DSN],
        number,
        by,
        workers=workers,
        archive_url=request.config_dict[SETTINGS].archive_url,
    )
    if done.archives == "pending":
        # a client that checks only the status must not take the archives as erased
        return json_response(done, status=503, headers={"Retry-After": "60"})
    return json_response(done)
