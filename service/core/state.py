"""Typed application state keys (aiohttp's ``web.AppKey``)."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from eventstore.append import Appender
from projections.clock import Clock
from projections.runner import Projector
from service.core.apikey import ApiKey
from service.core.config import Settings
from service.ingest.auth import FailureLimiter
from service.ingest.channels import ChannelCache

SETTINGS = web.AppKey("settings", Settings)
DSN = web.AppKey("dsn", str)
POOL = web.AppKey("pool", asyncpg.Pool)
#: the query API's own pool: an API query never waits for, nor holds, an ingest connection
API_POOL = web.AppKey("api_pool", asyncpg.Pool)
APPENDER = web.AppKey("appender", Appender)
CHANNELS = web.AppKey("channels", ChannelCache)
LIMITER = web.AppKey("limiter", FailureLimiter)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
PROJECTOR = web.AppKey("projector", Projector)
API_KEY = web.AppKey("api_key", ApiKey)
