"""An ngserve app served from a thread of this process: the server of a notebook kernel.

The kernel must keep running cells while the viewer reads, so the app runs on its own event
loop in a daemon thread, bound like ``ngserve view`` binds (127.0.0.1, a free port).  Besides
the local folders it is given, it always mounts the arrays the process holds
(:mod:`volumes.memory`) as ``ARRAYS_MOUNT``, shown through the ``/-/precomputed/`` view.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from aiohttp import web

from .config import MountConfig, ServerConfig
from .runner import bind
from .storage import MEMORY_SOURCE

# The mount of in-memory arrays.  With one folder served at the root, a subfolder of this name is
# hidden behind it: a name no dataset folder is likely to have.
ARRAYS_MOUNT = "_ngserve_arrays"
STOP_TIMEOUT = 10.0  # seconds for the thread to end after stop()
DRAIN_SECONDS = 1.0  # requests in flight at stop() get this long


class BackgroundServer:
    """A running app in a daemon thread; ``url`` is ``http://127.0.0.1:<port>``."""

    def __init__(self, config: ServerConfig) -> None:
        from .app import create_app

        self.config = config
        self.folders = {m.name: Path(m.source) for m in config.mounts if m.source != MEMORY_SOURCE}
        sock = bind(config.host, config.port, reuse_port=False)
        sock.listen(128)
        self.port: int = sock.getsockname()[1]
        self.url = f"http://{config.host}:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        app = create_app(config)
        self._thread = threading.Thread(target=self._run, args=(app, sock), name=f"ngserve-{self.port}", daemon=True)
        self._thread.start()
        self._ready.wait(STOP_TIMEOUT)
        if self._failed is not None:
            raise self._failed

    def _run(self, app: web.Application, sock) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=DRAIN_SECONDS)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread, which raises it
            self._failed = exc
            self._ready.set()
            sock.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())  # ends event streams (on_shutdown), closes the socket
            loop.close()

    def serves(self, folder: Path) -> str | None:
        """This server's URL of local ``folder`` (the folder or one below a mount), else None."""
        from ngstate import registry

        entry = {"url": self.url, "mounts": {n: str(f) for n, f in self.folders.items()}}
        return registry.serving_url(folder, [entry])

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STOP_TIMEOUT)


def start(folders: list[Path], host: str = "127.0.0.1", port: int = 0) -> BackgroundServer:
    """Serve ``folders`` (named as ``ngserve view`` names them) and the in-memory arrays from a thread."""
    from .commands.view import folder_mounts

    mounts = folder_mounts(folders) + [MountConfig(ARRAYS_MOUNT, MEMORY_SOURCE)]
    # Any page may frame it: a notebook's origin (http://localhost:8888, a hub) is not this server's.
    # It listens on 127.0.0.1 only, and serves public data as every public ngserve mount does.
    return BackgroundServer(ServerConfig(host=host, port=port, mounts=mounts, access_log=False,
                                         frame_ancestors=["*"]))
