"""``ngstate.show``: the built-in viewer inline in a notebook, its live state readable and settable from Python.

The viewer page is served by a server this process starts in a thread (``server.background``:
127.0.0.1, a free port), which also serves the arrays held in memory and the local sources'
folders, unless a running ``ngserve serve`` (found through :mod:`ngstate.registry`) serves every
local source: the state then names that server's URLs.  Each viewer has its own token; its page
takes its state from the server's event stream and POSTs every change back
(``server.viewer_states``), so ``.state`` is what the user sees and ``.set_state`` moves every
page showing it.

Behind jupyter-server-proxy or JupyterHub the browser cannot reach 127.0.0.1: ``base_url=`` (or
``$NGSERVE_BASE_URL``) says where it reaches the server, ``{port}`` standing for its port, e.g.
``/proxy/{port}``; under JupyterHub (``$JUPYTERHUB_SERVICE_PREFIX`` set) that is the default.
"""

from __future__ import annotations

import html
import json
import os
import secrets
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from volumes import strip_scheme

from . import registry
from .state import State, describe
from .urls import NGSERVE_VIEWER_PATH, encode_fragment, parse_url

BASE_URL_ENV = "NGSERVE_BASE_URL"
TIMEOUT = 10.0
HEIGHT = 600  # pixels of the inline viewer

_SERVERS: list = []  # server.background.BackgroundServer started by this process
_LOCK = threading.Lock()


class Viewer:
    """A viewer of one state, shown inline by Jupyter; its state lives on the server that hosts it."""

    def __init__(self, server_url: str, base: str, state: dict, *, arrays: Sequence[str] = (),
                 height: int = HEIGHT, data_base: str | None = None) -> None:
        self.server_url = server_url.rstrip("/")  # where this process reaches the server
        self.base = base.rstrip("/")  # where a browser reaches it (may be a path: relative to the notebook)
        self.token = secrets.token_urlsafe(16)  # the page URL is the only key to this viewer's state
        self.height = height
        self._arrays = list(arrays)  # volumes.memory keys this viewer holds
        self._data_base = data_base  # the base URL the state's own data URLs start with (pages rewrite it)
        self._last = state
        self.set_state(state)

    # -- the state -----------------------------------------------------------------
    def _call(self, method: str, body: dict | None = None) -> dict | None:
        req = urllib.request.Request(
            f"{self.server_url}/-/viewer/state/{self.token}", method=method,
            data=None if body is None else json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise RuntimeError(f"the ngserve at {self.server_url} refused the viewer's state: HTTP {exc.code}") from None
        except OSError as exc:
            raise RuntimeError(f"the ngserve at {self.server_url} does not answer ({exc}); show the data again") from None

    @property
    def state(self) -> dict:
        """The viewer's current state: as the user last left it in any page showing it."""
        found = self._call("GET")
        if found is not None:
            self._last = found["s"]
        return self._last

    def set_state(self, state: dict | State | str) -> None:
        """Show ``state`` (a state dict, a :class:`State`, or a Neuroglancer URL) in every page of this viewer."""
        if isinstance(state, State):
            state = state.to_json()
        elif isinstance(state, str):
            state = parse_url(state)
        if not isinstance(state, dict):
            raise ValueError(f"set_state takes a state dict, a State or a Neuroglancer URL, not a {type(state).__name__}")
        self._call("PUT", {"s": state, "b": self._data_base})
        self._last = state

    # -- links and display -------------------------------------------------------------
    @property
    def page(self) -> str:
        """The live page of this viewer (what the notebook shows inline)."""
        return f"{self.base}/-/viewer/v/{self.token}/"

    @property
    def url(self) -> str:
        """A link to the current view: the built-in viewer with the state in its ``#!`` fragment."""
        return self.base + NGSERVE_VIEWER_PATH + encode_fragment(self.state)

    def _repr_html_(self) -> str:
        page = html.escape(self.page, quote=True)
        return (f'<iframe src="{page}" width="100%" height="{int(self.height)}" style="border:0" '
                f'allow="clipboard-write"></iframe>'
                f'<div><a href="{page}" target="_blank" rel="noopener">open this viewer in a tab</a></div>')

    def __repr__(self) -> str:
        try:
            return f"<ngstate.Viewer {describe(self.state)}; page {self.page}>"
        except RuntimeError:  # its server is gone (the kernel restarted it away): what was last known
            return f"<ngstate.Viewer {describe(self._last)}; page {self.page} (its server does not answer)>"

    def close(self) -> None:
        """Release the arrays this viewer holds in memory (its pages then show no data for them)."""
        from volumes.memory import unregister

        for key in self._arrays:
            unregister(key)
        self._arrays = []


def show(*sources: Any, base_url: str | None = None, voxel_size: Sequence[float] | None = None,
         units: str | None = None, name: str | None = None, kind: str | None = None, height: int = HEIGHT,
         **options) -> Viewer:
    """A :class:`Viewer` of ``sources``: local paths, http(s) URLs, numpy or dask arrays, or one
    Neuroglancer URL (a ``#!`` state or an ngserve short link) to load as it is.

    ``voxel_size`` (``z, y, x``, array order) and ``units`` (an OME unit name) place array sources;
    ``name`` and ``kind`` name the layer and force its type when there is one source (else use
    ``names=``/``kinds=`` lists); other options are :func:`ngstate.build_state`'s.
    """
    if not sources:
        raise ValueError("show needs a source: a path, a URL, an array, or a Neuroglancer URL")
    if len(sources) == 1 and isinstance(sources[0], str) and "#" in sources[0]:
        if options or voxel_size or units or name or kind:
            raise ValueError("a Neuroglancer URL is shown as it is: give no options with it")
        state = parse_url(sources[0])
        server = _hosting([], data_elsewhere=True)
        return Viewer(server.url, _browser_base(base_url, server.url), state, height=height)
    for option, value in (("name", name), ("kind", kind)):
        if value is not None:
            if len(sources) != 1:
                raise ValueError(f"{option}= is for one source; with several, give {option}s=[...] (one per source)")
            options[option + "s"] = [value]
    for source in sources:
        if not (isinstance(source, (str, os.PathLike)) or _is_array(source)):
            raise ValueError(f"cannot show a {type(source).__name__}: give a path, a URL, or a numpy or dask array")
    arrays = [i for i, s in enumerate(sources) if _is_array(s)]
    if (voxel_size is not None or units is not None) and not arrays:
        raise ValueError("voxel_size= and units= place array sources; give them with a numpy or dask array")
    local = [Path(strip_scheme(os.fspath(s))).expanduser() for s in sources
             if isinstance(s, (str, os.PathLike)) and not _is_url(strip_scheme(os.fspath(s)))]
    for path in local:
        if not path.exists():
            raise ValueError(f"{path} does not exist")
    browser_base = _browser_base(base_url, None)
    # A running ngserve serves the local data when it can be reached as it is (no proxy base: the
    # browser would not reach its port).  The page is always on a server of ours: it holds this
    # viewer's state in one process (a server with workers would not), and any notebook may frame it.
    server = _hosting(local, data_elsewhere=browser_base is None and _served_elsewhere(local))
    from volumes.memory import register

    keys: dict[int, str] = {}
    try:
        for i in arrays:
            label = options.get("names", [None] * len(sources))[i] if isinstance(options.get("names"), list) else None
            keys[i] = register(sources[i], name=label or "array", voxel_size=voxel_size, units=units)
        state = _build(server, sources, keys, options)
    except BaseException:
        from volumes.memory import unregister

        for key in keys.values():
            unregister(key)
        raise
    return Viewer(server.url, _browser_base(base_url, server.url), state, arrays=list(keys.values()),
                  height=height, data_base=server.url)


def _build(server, sources: Sequence[Any], keys: dict[int, str], options: dict) -> dict:
    from volumes.memory import open_memory

    from . import build_state

    urls = list(options.pop("urls", None) or [None] * len(sources))
    shown: list[Any] = []
    for i, source in enumerate(sources):
        if i in keys:
            from server.background import ARRAYS_MOUNT

            shown.append(open_memory(f"memory://{keys[i]}"))  # opened here: build_state takes a Dataset as it is
            urls[i] = f"{server.url}/{ARRAYS_MOUNT}/{keys[i]}"
        else:
            shown.append(source)
    served = {str(f): server.url + (f"/{n}" if n else "") for n, f in getattr(server, "folders", {}).items()}
    state = build_state(shown, urls=urls, served_at=served, viewer=server.url + NGSERVE_VIEWER_PATH, **options)
    return state.to_json()


def _hosting(local: list[Path], data_elsewhere: bool):
    """This process's server for a new viewer's page: one serving the ``local`` paths too, unless
    ``data_elsewhere`` (a running ngserve serves them); started when none of ours fits."""
    from server import background
    from server.commands.view import folders_of

    folders = [] if data_elsewhere else folders_of([str(p) for p in local])
    with _LOCK:
        _SERVERS[:] = [s for s in _SERVERS if s.running]
        for server in _SERVERS:
            if all(server.serves(f) for f in folders):
                return server
        server = background.start(folders)
        _SERVERS.append(server)
        return server


def _served_elsewhere(local: list[Path]) -> bool:
    """Whether a running ``ngserve serve`` serves every local path (its URLs then go in the state)."""
    servers = registry.running() if local else []
    return bool(servers) and all(registry.serving_url(p, servers) for p in local)


def _browser_base(base_url: str | None, server_url: str | None) -> str | None:
    """Where a browser reaches the server: ``base_url``, ``$NGSERVE_BASE_URL``, JupyterHub's proxy, or its
    own URL (None when ``server_url`` is None: no base is configured)."""
    base = base_url or os.environ.get(BASE_URL_ENV)
    if not base and os.environ.get("JUPYTERHUB_SERVICE_PREFIX"):
        base = os.environ["JUPYTERHUB_SERVICE_PREFIX"].rstrip("/") + "/proxy/{port}"
    if not base or server_url is None:
        return base or server_url
    port = server_url.rsplit(":", 1)[-1].split("/", 1)[0]
    return base.replace("{port}", port).rstrip("/")


def _is_url(source: Any) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def _is_array(source: Any) -> bool:
    return not isinstance(source, (str, os.PathLike)) and hasattr(source, "shape") and hasattr(source, "dtype")


def shutdown() -> None:
    """Stop the servers this process started for its viewers."""
    with _LOCK:
        for server in _SERVERS:
            server.stop()
        _SERVERS.clear()
