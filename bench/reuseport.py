"""``acklog serve`` bound with SO_REUSEPORT, so N of them share one port: the bench's stand-in
for ``acklog serve --workers N`` on a tree where process roles have not landed.

Only the listening socket differs (``loop.create_server(..., reuse_port=True)``); the app,
the appender and the hot path are acklog's own.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from service import cli


def main(argv: list[str]) -> int:
    real = asyncio.BaseEventLoop.create_server

    async def create_server(self: Any, *args: Any, **kw: Any) -> Any:
        kw["reuse_port"] = True
        return await real(self, *args, **kw)

    asyncio.BaseEventLoop.create_server = create_server  # type: ignore[method-assign]
    try:
        import uvloop

        real_uv = uvloop.Loop.create_server

        async def create_server_uv(self: Any, *args: Any, **kw: Any) -> Any:
            kw["reuse_port"] = True
            return await real_uv(self, *args, **kw)

        uvloop.Loop.create_server = create_server_uv  # type: ignore[method-assign]
    except (ImportError, TypeError, AttributeError):
        pass
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
