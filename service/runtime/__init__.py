"""The composition root: the aiohttp apps of each role, the supervisor, liveness and readiness."""
