"""The server never stalls on its own log output (server/log_writer.py).

Each test starts ``python -m server serve`` with stdout and stderr as pipes and, after the
banner, does not read them while it makes requests: a pipe holds 64 KiB, so a server writing
its access log on the event loop stops answering after a few dozen lines of these sizes.  Every
request has a timeout, so such a server fails the test instead of hanging it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

TIMEOUT = 15  # seconds any one request may take: far above an answer, far below a hung test
DROPPED = re.compile(r"(\d+) log lines dropped: output not read")


class Unread:
    """A server whose stdout and stderr nobody reads until :meth:`read_all`."""

    def __init__(self, root: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", str(root), "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: the workers too are ended at the end
        )
        banner = self.proc.stdout.readline().decode()  # the one line read before read_all
        m = re.search(r"serving on http://([\d.]+):(\d+)/ ", banner)
        assert m, f"no banner: {banner!r}"
        self.host, self.port = m.group(1), int(m.group(2))
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str, fresh: bool = False) -> int:
        """GET over a kept-alive connection (a new one when ``fresh``: with --workers the kernel
        spreads connections, not requests); a connection refused is retried until a worker listens."""
        if fresh or self._conn is None:
            if self._conn is not None:
                self._conn.close()
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        self._conn.request("GET", path)
        response = self._conn.getresponse()
        response.read()
        return response.status

    def wait_listening(self, workers: int) -> None:
        """Until every worker listens (each has its own SO_REUSEPORT socket): a worker still
        starting would get the connections later, or the SIGTERM while it imports."""
        for _ in range(600):
            if self._listeners() >= workers:
                assert self.get("/-/health", fresh=True) == 200
                return
            assert self.proc.poll() is None, "the server ended"
            threading.Event().wait(0.1)
        raise AssertionError("the server never listened")

    def _listeners(self) -> int:
        with open("/proc/net/tcp") as f:
            rows = [line.split() for line in f.readlines()[1:]]
        return sum(1 for r in rows if r[1].endswith(f":{self.port:04X}") and r[3] == "0A")  # 0A: LISTEN

    def read_all(self) -> str:
        """Stop the server while reading its stderr, as a reader that came back would."""
        out: list[bytes] = []
        reader = threading.Thread(target=lambda: out.append(self.proc.stderr.read()), daemon=True)
        reader.start()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        reader.join(30)
        return b"".join(out).decode()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        else:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # a worker left behind, if any
            except ProcessLookupError:
                pass
        self.proc.stdout.close()
        self.proc.stderr.close()


def _dropped_metric(server: Unread) -> float:
    with urllib.request.urlopen(f"http://{server.host}:{server.port}/-/metrics", timeout=TIMEOUT) as r:
        text = r.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "ngserve_log_dropped_total")


@pytest.mark.parametrize("workers", [1, 2])
def test_unread_log_output_drops_lines_and_never_stalls_requests(tmp_path, workers):
    pad = "p" * 2000  # ~2 KiB lines: 3000 of them fill the pipe ~90 times and the queue ~6 times
    requests = 3000
    server = Unread(tmp_path, "--workers", str(workers))
    try:
        server.wait_listening(workers)
        for i in range(requests):
            assert server.get(f"/-/health?n={i}&pad={pad}", fresh=i % 50 == 0) == 200
        dropped = _dropped_metric(server)
        assert dropped > 0
        assert server.proc.poll() is None
        log = server.read_all()
    finally:
        server.close()
    written = len(re.findall(r"GET /-/health\?n=\d+&pad=p+ HTTP/1.1\" 200", log))
    reported = [int(n) for n in DROPPED.findall(log)]
    assert written > 0 and reported  # lines got through once read, and the gap is told
    assert sum(reported) >= dropped  # each drop counted is reported (later ones too: the scrape's)
    assert written + sum(reported) >= requests
    assert written < requests


@pytest.mark.parametrize("log_format, workers", [("text", 1), ("json", 2)])
def test_lines_queued_while_unread_are_all_written_at_shutdown(tmp_path, log_format, workers):
    # ~0.9 MB: fills the pipe 14 times over, fits the queue (MAX_QUEUED); lines stay under
    # PIPE_BUF (a JSON line holds the path twice), the most a pipe write keeps whole.
    pad = "q" * 1500
    requests = 560 if log_format == "text" else 280
    server = Unread(tmp_path, "--workers", str(workers), "--log-format", log_format)
    try:
        server.wait_listening(workers)
        for i in range(requests):
            assert server.get(f"/-/health?n={i}&pad={pad}", fresh=i % 20 == 0) == 200
        log = server.read_all()  # SIGTERM first, then read: the queued lines must still come out
    finally:
        server.close()
    lines = log.splitlines()
    if log_format == "json":
        records = [json.loads(line) for line in lines]  # whole lines: workers never cut each other's
        paths = [r["path"] for r in records if r.get("type") == "access"]
    else:
        paths = [m.group(1) for line in lines for m in [re.search(r'"GET (\S+) HTTP', line)] if m]
    seen = sorted(int(m.group(1)) for p in paths for m in [re.fullmatch(rf"/-/health\?n=(\d+)&pad={pad}", p)] if m)
    assert seen == list(range(requests))
    assert not DROPPED.search(log)


def test_a_read_log_loses_no_line(start_server, tmp_path):
    srv = start_server("serve", str(tmp_path))
    conn = http.client.HTTPConnection(srv.url.removeprefix("http://").split(":")[0],
                                      int(srv.url.rsplit(":", 1)[1]), timeout=TIMEOUT)
    requests = 2000
    for i in range(requests):
        conn.request("GET", f"/-/health?line={i}")
        conn.getresponse().read()
    conn.close()
    got = sorted(int(m.group(1)) for line in srv.requested(r"\?line=") for m in [re.search(r"\?line=(\d+) ", line)])
    assert got == list(range(requests))
    assert not any(DROPPED.search(line) for line in srv.log)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_stops_the_server_whose_output_is_never_read(tmp_path, workers):
    pad = "s" * 2000
    server = Unread(tmp_path, "--workers", str(workers))
    try:
        server.wait_listening(workers)
        for i in range(1500):  # the pipe and the queue full: the writer is stuck for good
            assert server.get(f"/-/health?n={i}&pad={pad}", fresh=i % 50 == 0) == 200
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0  # it gives up on the unread lines instead of waiting forever
    finally:
        server.close()
