"""The canonical feed (issue #18): one event format for every provider, pushed to the
user's own systems. Sole owner of every ``feed.*`` table (``sql/080_feed.sql``).

- :mod:`.events`        the versioned event schema (msgspec Structs; in the OpenAPI document)
- :mod:`.derive`        canonical events from decoded log events (pure; reuses the fold)
- :mod:`.store`         the outbox projector's SQL: its state, the feed, reads of the feed
- :mod:`.outbox`        the outbox projector (its own checkpoint and leader lock)
- :mod:`.subscriptions` subscriptions, secrets, attempts, dead letters, replays

Delivery over HTTP (signing, SSRF guard, retries) is in ``service/feed/delivery.py``.
"""
