"""The query API under ``/v1``: its routes, the feed's endpoints and stream, OpenAPI."""
