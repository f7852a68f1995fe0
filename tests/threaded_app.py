"""An aiohttp application served on 127.0.0.1 from a thread with its own event loop, for test upstreams."""

from __future__ import annotations

import asyncio
import ssl
import threading
from typing import Any, Coroutine

from aiohttp import web


class ThreadedApp:
    """Serve ``app`` on a free loopback port until :meth:`stop`; ``url`` is its origin."""

    def __init__(self, app: web.Application, ssl_context: ssl.SSLContext | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = web.AppRunner(app, access_log=None)
        self.port = self.run(self._start(ssl_context))
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{self.port}"

    async def _start(self, ssl_context: ssl.SSLContext | None) -> int:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
        return self.runner.addresses[0][1]

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def stop(self) -> None:
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()
