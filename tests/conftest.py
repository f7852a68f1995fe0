"""Shared fixtures: a real ``ngserve`` process on a free loopback port."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest


class ServerProcess:
    """An ``ngserve`` subprocess; ``log`` collects its stderr (access log) lines."""

    def __init__(self, args: list[str], cwd: Path | None = None, env: dict | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env,
        )
        self.log: list[str] = []
        self.logging = "--quiet" not in args  # a config file's access_log = false: pass --quiet too
        self.stdout: list[str] = []
        self.url = self._wait_for_banner()
        threading.Thread(target=self._drain, args=(self.proc.stderr, self.log), daemon=True).start()
        self._wait_healthy()

    def _wait_for_banner(self) -> str:
        for line in self.proc.stdout:
            self.stdout.append(line)
            m = re.search(r"serving on (http://\S+?)/ ", line)
            if m:
                threading.Thread(target=self._drain, args=(self.proc.stdout, self.stdout), daemon=True).start()
                return m.group(1)
        err = self.proc.stderr.read()
        raise RuntimeError(f"ngserve did not start: {''.join(self.stdout)}{err}")

    @staticmethod
    def _drain(stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def _wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/-/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("ngserve never became healthy:\n" + "".join(self.log))

    def requested(self, pattern: str) -> list[str]:
        """Access-log lines whose request line matches ``pattern`` (a regex), once the log has
        caught up with every request already answered (see :meth:`settle`)."""
        if self.logging and self.proc.poll() is None:  # a process that has ended logs nothing more
            self.settle()
        return self._lines(pattern)

    def _lines(self, pattern: str) -> list[str]:
        return [line for line in self.log if re.search(pattern, line)]

    def settle(self, timeout: float = 10) -> None:
        """Wait until the access log has caught up with the requests already answered.

        A client can hold an answer before the server has logged it, so send a marked
        request and wait for its line; the lines of earlier requests come before it.
        """
        mark = uuid.uuid4().hex
        with urllib.request.urlopen(f"{self.url}/-/health?mark={mark}", timeout=5):
            pass
        deadline = time.monotonic() + timeout
        while not self._lines(mark):
            assert time.monotonic() < deadline, "the access log never showed the marked request"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_config(folder: Path, secret: bytes, tables: str, auth: str = "") -> Path:
    """``folder/ngserve.toml`` for a protected test deployment: a free port, ``folder/secret`` as the
    auth secret, session cookies allowed over plain http (tests run on 127.0.0.1), any further
    ``auth`` lines, then ``tables`` (the ``[[mounts]]`` and ``[[users]]``).  Returns its path."""
    (folder / "secret").write_bytes(secret)
    config = folder / "ngserve.toml"
    config.write_text(f'[server]\nport = 0\n[auth]\nsecret_file = "secret"\ncookie_secure = false\n{auth}\n{tables}')
    return config


@pytest.fixture
def start_server():
    """Factory: ``start_server("serve", DIR, "--mount", ...)`` → a running ServerProcess."""
    started: list[ServerProcess] = []

    def start(*args: str, **kwargs) -> ServerProcess:
        args = list(args)
        if "--port" not in args:
            args += ["--port", "0"]
        server = ServerProcess(args, **kwargs)
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()
