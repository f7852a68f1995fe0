"""A real WebDAV server for tests and benchmarks: wsgidav on cheroot, with basic auth, in a subprocess.

Running it as a process lets a test kill it outright and start it again on the
same port.  A thin WSGI layer in front of wsgidav injects faults on demand
(delay, a fixed status, a trickled or truncated body) and counts requests; it
is driven through ``/__fault__`` and changes nothing else about wsgidav's answers.

    python tests/webdav_server.py ROOT PORT USER PASSWORD
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

CONTROL = "/__fault__"


# -- inside the server process -----------------------------------------------------------
class FaultLayer:
    def __init__(self, app) -> None:
        self.app = app
        self.mode: dict = {"mode": "ok"}
        self.counts: dict[str, int] = {}
        self.aborted = 0
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL):
            return self._control(environ, start_response)
        method = environ["REQUEST_METHOD"]
        with self.lock:
            self.counts[method] = self.counts.get(method, 0) + 1
            self.counts[f"{method} {path}"] = self.counts.get(f"{method} {path}", 0) + 1
            if "HTTP_IF_NONE_MATCH" in environ:
                self.counts[f"conditional {path}"] = self.counts.get(f"conditional {path}", 0) + 1
        mode = self.mode
        if mode["mode"] == "delay":
            time.sleep(float(mode.get("seconds", 5)))
        elif mode["mode"] == "status":
            code = int(mode.get("code", 500))
            start_response(f"{code} Injected", [("Content-Type", "text/plain"), ("Content-Length", "9")])
            return [b"injected\n"]
        body = self.app(environ, start_response)
        if method == "GET" and mode["mode"] == "trickle":
            return self._trickle(body, float(mode.get("pause", 0.05)))
        if method == "GET" and mode["mode"] == "truncate":
            return self._truncate(body)
        return body

    def _trickle(self, body, pause: float):
        finished = False
        try:
            for chunk in body:
                for i in range(0, len(chunk), 4096):
                    yield chunk[i : i + 4096]
                    time.sleep(pause)
            finished = True
        finally:
            if not finished:
                with self.lock:
                    self.aborted += 1
            if hasattr(body, "close"):
                body.close()

    @staticmethod
    def _truncate(body):
        data = b"".join(body)
        if hasattr(body, "close"):
            body.close()
        yield data[: len(data) // 2]
        raise ConnectionAbortedError("fault: truncated body")  # cheroot drops the connection

    def _control(self, environ, start_response):
        from urllib.parse import parse_qsl

        path = environ["PATH_INFO"][len(CONTROL) :]
        if path == "/stats":
            with self.lock:
                body = json.dumps({"counts": self.counts, "aborted": self.aborted}).encode()
        elif path == "/reset":
            with self.lock:
                self.counts, self.aborted = {}, 0
            body = b"{}"
        else:
            self.mode = dict(parse_qsl(environ.get("QUERY_STRING", ""))) or {"mode": "ok"}
            body = json.dumps(self.mode).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def _serve(root: str, port: int, user: str, password: str) -> None:
    from cheroot import wsgi
    from wsgidav.wsgidav_app import WsgiDAVApp

    config = {
        "host": "127.0.0.1",
        "port": port,
        "provider_mapping": {"/": root},
        "simple_dc": {"user_mapping": {"*": {user: {"password": password}}}},
        "http_authenticator": {"accept_basic": True, "accept_digest": False, "default_to_digest": False},
        "verbose": 0,
        "logging": {"enable": False},
        "dir_browser": {"enable": False},
    }
    server = wsgi.Server(("127.0.0.1", port), FaultLayer(WsgiDAVApp(config)), numthreads=32)
    print("ready", flush=True)
    server.start()


# -- in the test process ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDAVServer:
    """A wsgidav subprocess serving ``root`` at ``url`` with basic auth ``user``/``password``."""

    def __init__(self, root: Path, user: str = "davuser", password: str = "dav-secret-pw", port: int | None = None):
        self.root, self.user, self.password = Path(root), user, password
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(self.root), str(self.port), self.user, self.password],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.stats()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("the WebDAV server exited at start-up")
                time.sleep(0.1)
        raise RuntimeError("the WebDAV server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _control(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + CONTROL + path, timeout=5) as r:
            return json.loads(r.read())

    def fault(self, mode: str = "ok", **params) -> None:
        """Set the fault mode: ok, delay (seconds=), status (code=), trickle (pause=), truncate."""
        query = "&".join(f"{k}={v}" for k, v in {"mode": mode, **params}.items())
        self._control("?" + query)

    def stats(self) -> dict:
        return self._control("/stats")

    def reset_stats(self) -> None:
        self._control("/reset")


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
