"""The errors every HTTP surface maps alike: 400 for a bad parameter, 404 for an unknown
resource, 503 (never 500) when the database does not answer.

Handlers and the reads below them raise these; the query API's guard answers them as JSON
through :func:`answer`, the console's guard as pages with the same statuses, and ``/readyz``
catches :data:`UNAVAILABLE` for its own 503. Driver errors never reach this module: every
handler runs inside the store's boundary (:func:`at_store_boundary`), which translates them
once into ``StoreUnavailable`` (``eventstore.errors``).
"""

from __future__ import annotations

from aiohttp import web

from eventstore.errors import StoreUnavailable, store_boundary
from service.http.responses import Handler, error

#: "the database did not answer" (translated at the store boundary), or did not in time:
#: 503 with ``Retry-After``, never 500
UNAVAILABLE: tuple[type[BaseException], ...] = (StoreUnavailable, TimeoutError)


def at_store_boundary(handler: Handler) -> Handler:
    """``handler`` with every driver error it lets out translated into the store's kinds."""

    async def translated(request: web.Request) -> web.StreamResponse:
        with store_boundary():
            return await handler(request)

    return translated


#: seconds a client is asked to wait after a 503
RETRY_AFTER = "5"


class BadParameter(Exception):
    """A query or path parameter with a value the API cannot use: 400 naming it."""

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(detail)
        self.parameter = parameter
        self.detail = detail


class NotFound(Exception):
    """An unknown channel, message, event or subscription: 404, ``code`` says which."""

    def __init__(self, detail: str, code: str = "not_found") -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Gone(Exception):
    """A position retention took out of the log: 410 naming the archive that holds it."""

    def __init__(
        self, position: int, oldest: int, archive: str | None, archive_url: str | None
    ) -> None:
        where = (
            f"archive {archive} in {archive_url} holds it (acklog archive restore {archive})"
            if archive
            else "it held no event"
        )
        super().__init__(f"position {position} left the log with retention; {where}")
        self.detail = str(self)
        self.position = position
        self.oldest = oldest
        self.archive = archive
        self.archive_url = archive_url


#: what :func:`answer` maps
MAPPED: tuple[type[BaseException], ...] = (BadParameter, NotFound, Gone, *UNAVAILABLE)


def answer(exc: BaseException) -> web.Response:
    """The JSON answer of one of :data:`MAPPED` (a database error for anything else)."""
    if isinstance(exc, BadParameter):
        return error(400, "bad_request", exc.detail, parameter=exc.parameter)
    if isinstance(exc, NotFound):
        return error(404, exc.code, exc.detail)
    if isinstance(exc, Gone):
        return error(
            410,
            "gone",
            exc.detail,
            position=exc.position,
            oldest_position=exc.oldest,
            archive=exc.archive,
            archive_url=exc.archive_url,
        )
    return error(
        503,
        "unavailable",
        "the database did not answer; retry later",
        headers={"Retry-After": RETRY_AFTER},
    )
