"""``GET /openapi.json``: OpenAPI 3.1, its bodies generated from ``service.reads.models``.

Response schemas come from ``msgspec.json.schema_components`` over the very Structs the
handlers encode, so the document cannot drift from the answers; the fuzz test
(``tests/service/api/test_api_fuzz.py``) checks every answer against it. Parameters are declared here,
once per operation, and a test checks they match the routes of ``service.api.routes``.
"""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple

import msgspec
from aiohttp import web

from projections.erasure import Erased
from projections.feed import events as feed_events
from service.api.erasures import ErasureRequest
from service.http.responses import json_response
from service.reads import params
from service.reads.models import (
    ChannelList,
    ChannelStatus,
    DeadLetterPage,
    Error,
    EventOut,
    EventPage,
    LogStatus,
    MessageDetail,
    MessagePage,
    QuarantinePage,
    SubscriptionList,
)

_REF = "#/components/schemas/{name}"
_CHANNEL_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Param(NamedTuple):
    name: str
    where: str  # "path" or "query"
    schema: dict[str, Any]
    description: str

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.where,
            "required": self.where == "path",
            "description": self.description,
            "schema": self.schema,
        }


def _limit(maximum: int) -> Param:
    return Param(
        "limit",
        "query",
        {"type": "integer", "minimum": 1, "maximum": maximum, "default": params.DEFAULT_LIMIT},
        f"page size (1-{maximum})",
    )


CHANNEL = Param("channel", "path", {"type": "string", "pattern": _CHANNEL_PATTERN}, "channel name")
CHANNEL_FILTER = Param(
    "channel",
    "query",
    {"type": "string", "pattern": _CHANNEL_PATTERN},
    "only this channel (404 when no such channel exists)",
)
AFTER = Param(
    "after",
    "query",
    {"type": "integer", "minimum": 0, "maximum": params.MAX_BIGINT},
    "only positions after this one (pass the previous page's next_after)",
)


class Operation(NamedTuple):
    path: str
    operation_id: str
    summary: str
    response: type
    parameters: tuple[Param, ...]
    #: whether a 404 is possible (an unknown channel, message or event)
    not_found: bool
    #: whether a 410 is possible (a position retention took out of the log)
    gone: bool = False


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v1/channels",
        "listChannels",
        "Channels with provider, connection status and message counts by state",
        ChannelList,
        (),
        False,
    ),
    Operation(
        "/v1/channels/{channel}/status",
        "channelStatus",
        "Current connection status of the channel's instance and its history, newest first",
        ChannelStatus,
        (CHANNEL, _limit(params.MAX_LIMIT)),
        True,
    ),
    Operation(
        "/v1/channels/{channel}/messages",
        "listMessages",
        "Messages of a channel, newest first (by the log position that created each one)",
        MessagePage,
        (
            CHANNEL,
            Param("state", "query", {"type": "string", "enum": list(params.STATES)}, "state"),
            Param(
                "direction",
                "query",
                {"type": "string", "enum": list(params.DIRECTIONS)},
                "incoming or outgoing",
            ),
            Param(
                "overdue",
                "query",
                {"type": "boolean"},
                "true: still sending after the sent deadline, or still sent after the"
                " delivery deadline, now; false: the others",
            ),
            Param(
                "anomaly",
                "query",
                {"type": "string", "enum": list(params.ANOMALIES)},
                "messages that have this anomaly now (see the README's Anomalies section)",
            ),
            Param(
                "failure_class",
                "query",
                {"type": "string", "enum": list(params.FAILURE_CLASS_VALUES)},
                "messages whose first failure has this class (see the README's failure tables)",
            ),
            Param(
                "origin",
                "query",
                {"type": "string", "enum": list(params.ORIGINS)},
                "incoming messages a customer wrote, or system notices no customer wrote"
                " (Meta request_welcome, changed number, encryption notices…)",
            ),
            Param(
                "since",
                "query",
                {"type": "string", "format": "date-time"},
                "first seen at or after this time (ISO-8601; no offset means UTC)",
            ),
            Param(
                "until",
                "query",
                {"type": "string", "format": "date-time"},
                "first seen before this time (ISO-8601; no offset means UTC)",
            ),
            Param("cursor", "query", {"type": "string"}, "next_cursor of the previous page"),
            _limit(params.MAX_LIMIT),
        ),
        True,
    ),
    Operation(
        "/v1/channels/{channel}/messages/{message_id}",
        "getMessage",
        "State, milestones, failures, missed acks, receipts and timeline of one message",
        MessageDetail,
        (
            CHANNEL,
            Param(
                "message_id",
                "path",
                {"type": "string", "minLength": 1},
                "the provider's message id, URL-encoded",
            ),
        ),
        True,
    ),
    Operation(
        "/v1/log",
        "logStatus",
        "The log's extent (the oldest position kept after retention) and the last retention run",
        LogStatus,
        (),
        False,
    ),
    Operation(
        "/v1/events",
        "listEvents",
        "Raw webhooks in log order, each with what its decoder makes of it",
        EventPage,
        (CHANNEL_FILTER, AFTER, _limit(params.MAX_EVENT_LIMIT)),
        True,
        True,
    ),
    Operation(
        "/v1/events/{position}",
        "getEvent",
        "One raw webhook as received, and how it decodes",
        EventOut,
        (
            Param(
                "position",
                "path",
                {"type": "integer", "minimum": 1, "maximum": params.MAX_BIGINT},
                "log position",
            ),
        ),
        True,
        True,
    ),
    Operation(
        "/v1/quarantine",
        "listQuarantine",
        "Events no decoder could read, with the reason, in log order",
        QuarantinePage,
        (CHANNEL_FILTER, AFTER, _limit(params.MAX_LIMIT)),
        True,
    ),
    Operation(
        "/v1/feed/subscriptions",
        "listSubscriptions",
        "Subscriptions to the canonical feed: filters, status, backlog, recent deliveries",
        SubscriptionList,
        (),
        False,
    ),
    Operation(
        "/v1/feed/dead-letters",
        "listDeadLetters",
        "Feed events whose delivery attempts were exhausted (replayed ones included)",
        DeadLetterPage,
        (
            Param(
                "subscription",
                "query",
                {"type": "string", "minLength": 1},
                "only this subscription (404 when there is none of that name)",
            ),
            Param(
                "after",
                "query",
                {"type": "integer", "minimum": 0, "maximum": params.MAX_BIGINT},
                "only dead letters after this id (the previous page's next_after)",
            ),
            _limit(params.MAX_LIMIT),
        ),
        True,
    ),
)

#: ``GET /v1/stream``'s parameters (the route takes these only)
STREAM_PARAMETERS: tuple[Param, ...] = (
    Param(
        "channel",
        "query",
        {"type": "string", "pattern": _CHANNEL_PATTERN},
        "only this channel (repeatable)",
    ),
    Param(
        "type",
        "query",
        {"type": "string", "enum": list(feed_events.EVENT_TYPES)},
        "only this event type (repeatable)",
    ),
    Param(
        "after",
        "query",
        {"type": "integer", "minimum": 0, "maximum": params.MAX_BIGINT},
        "resume after this feed seq (the Last-Event-ID header does the same)",
    ),
)


def _feed_documents(
    event_refs: tuple[dict[str, Any], ...], error: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stream's path and the ``webhooks`` section: the canonical events (version
    ``feed_events.VERSION``) as sent to subscriptions and on the stream."""
    one_of = {"oneOf": list(event_refs), "discriminator": {"propertyName": "type"}}
    stream: dict[str, Any] = {
        "get": {
            "operationId": "streamFeed",
            "summary": "The canonical feed as Server-Sent Events (id: feed seq; event: type;"
            " data: the event's JSON), resumable with Last-Event-ID; heartbeat comments",
            "parameters": [p.spec() for p in STREAM_PARAMETERS],
            "responses": {
                "200": {
                    "description": "an endless text/event-stream; each data line is one event",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "400": _json(error, "a parameter is invalid; `parameter` names it"),
                "401": _json(error, "missing or wrong API key"),
                "503": _json(error, "the database is unavailable; retry later"),
            },
        }
    }
    webhooks: dict[str, Any] = {
        name: {
            "post": {
                "operationId": "feed_" + name.replace(".", "_"),
                "summary": f"{name}: signed as Standard Webhooks (webhook-id is the event id)",
                "requestBody": {"content": {"application/json": {"schema": ref}}},
                "responses": {"200": {"description": "any 2xx: delivered"}},
            }
        }
        for name, ref in zip(feed_events.EVENT_TYPES, event_refs, strict=True)
    }
    webhooks["any"] = {
        "post": {
            "operationId": "feed_any",
            "summary": "Every feed event, discriminated by type",
            "requestBody": {"content": {"application/json": {"schema": one_of}}},
            "responses": {"200": {"description": "any 2xx: delivered"}},
        }
    }
    return stream, webhooks


def _erasure_document(
    request: dict[str, Any], answer: dict[str, Any], error: dict[str, Any]
) -> dict[str, Any]:
    """``POST /v1/erasures`` (docs/erasure.md): no query parameters, a JSON body."""
    return {
        "post": {
            "operationId": "erase",
            "summary": "Erase one person's phone number everywhere (GDPR art. 17): the raw"
            " webhooks naming it in any spelling, the feed, delivery records, the read models;"
            " answers the audit record (matched false: found nowhere, nothing changed)",
            "parameters": [],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request}},
            },
            "responses": {
                "200": _json(answer, "erased, or found nowhere (matched false)"),
                "400": _json(error, "not a JSON object with a phone number; `parameter` is phone"),
                "401": _json(error, "missing or wrong API key"),
                "503": _json(
                    {"oneOf": [answer, error]},
                    "the database is unavailable (an error), or the database was erased but"
                    " the archive store failed (the audit record with archives `pending`):"
                    " the archives still hold the number; send the request again",
                ),
            },
        }
    }


def query_parameters(path: str) -> frozenset[str]:
    """The query parameters an operation declares: the only ones ``service.api.routes`` accepts."""
    (op,) = [op for op in OPERATIONS if op.path == path]
    return frozenset(p.name for p in op.parameters if p.where == "query")


def _json(ref: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _operation(op: Operation, ref: dict[str, Any], error: dict[str, Any]) -> dict[str, Any]:
    responses = {"200": _json(ref, "OK")}
    if op.parameters:
        responses["400"] = _json(error, "a parameter is invalid; `parameter` names it")
    responses["401"] = _json(error, "missing or wrong API key")
    if op.not_found:
        responses["404"] = _json(error, "no such channel, message or event")
    if op.gone:
        responses["410"] = _json(
            error,
            "the position was archived and dropped by retention; `archive` and `archive_url`"
            " name the archive that holds it, `oldest_position` the oldest kept",
        )
    responses["503"] = _json(error, "the database is unavailable; retry later")
    return {
        "operationId": op.operation_id,
        "summary": op.summary,
        "parameters": [p.spec() for p in op.parameters],
        "responses": responses,
    }


@cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once; it depends on code only)."""
    feed_types = [
        feed_events.MessageStateChanged,
        feed_events.AckMissed,
        feed_events.MessageAnomaly,
        feed_events.InstanceStatusChanged,
        feed_events.SubjectErased,
    ]
    erasure_types = [ErasureRequest, Erased]
    types: list[Any] = [op.response for op in OPERATIONS] + feed_types + erasure_types + [Error]
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    error = refs[-1]
    paths: dict[str, Any] = {
        op.path: {"get": _operation(op, ref, error)}
        for op, ref in zip(OPERATIONS, refs[: len(OPERATIONS)], strict=True)
    }
    feed_refs = refs[len(OPERATIONS) : len(OPERATIONS) + len(feed_types)]
    paths["/v1/stream"], webhooks = _feed_documents(feed_refs, error)
    paths["/v1/erasures"] = _erasure_document(refs[-3], refs[-2], error)
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document (no API key needed)",
            "security": [],
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document")},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "acklog query API",
            "version": "1",
            "description": "Timelines, states and missed acks of WhatsApp messages, connection"
            " status of provider instances, and the raw webhook log they come from.",
        },
        "paths": paths,
        "webhooks": webhooks,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "ACKLOG_API_KEY (or ACKLOG_API_KEY_FILE), else the key"
                    " acklog generated into <data_dir>/api_key, or any named key of"
                    " `acklog keys add` not revoked",
                }
            },
        },
        "security": [{"bearerAuth": []}],
    }


async def openapi_view(request: web.Request) -> web.Response:
    return json_response(document())


def routes() -> list[web.RouteDef]:
    return [web.get("/openapi.json", openapi_view, allow_head=False)]
