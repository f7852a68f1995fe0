"""Real deployment pieces for tests: a PostgreSQL server and an nginx, each on a temporary
folder and a free loopback port, stopped (and their folders removed) by the caller.

Debian's packages provide them (``apt-get install -y postgresql nginx``, as the README's
test command does).  PostgreSQL refuses to run as root, so as root it runs as ``nobody``.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} never listened on port {port}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: apt-get install -y postgresql")
    return found[-1]


class Postgres:
    """``initdb`` into a temporary folder, then ``postgres`` on a free port, password auth."""

    user = "ngserve"
    password = "pg-test-password"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ngserve-pg-"))
        as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "nobody")
            as_user = ["runuser", "-u", "nobody", "--"]
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password)
        if as_user:
            shutil.chown(pwfile, "nobody")
        subprocess.run(
            [*as_user, _postgres_bin("initdb"), "-D", str(self.dir / "data"), "-U", self.user, "-A", "scram-sha-256",
             f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True,
        )
        self.as_user = as_user
        self.port = free_port()
        self.url = f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"
        self.start()

    def start(self) -> None:
        """Start (or restart, on the same port and data) the server."""
        self.proc = subprocess.Popen(
            [*self.as_user, _postgres_bin("postgres"), "-D", str(self.dir / "data"), "-k", str(self.dir),
             "-p", str(self.port), "-h", "127.0.0.1", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, "postgres")

    def stop(self) -> None:
        """A fast shutdown (SIGINT to the postmaster): SIGTERM would wait for every client to leave."""
        if self.proc.poll() is None:
            try:
                pid = int((self.dir / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
                os.kill(pid, signal.SIGINT)
                self.proc.wait(20)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        stop(self.proc)

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url, password=self.password, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + "/" + name

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def nginx_accel_locations(prefix: str, mounts: dict[str, Path]) -> str:
    """The ``internal`` locations that serve ``accel_redirect`` answers (as the README shows)."""
    out = []
    for name, folder in mounts.items():
        out.append(
            f"location {prefix}{name + '/' if name else ''} {{\n"
            f"  internal;\n  alias {folder}/;\n  max_ranges 1;\n"
            "  add_header Content-Encoding $upstream_http_content_encoding;\n"
            "  add_header Vary $upstream_http_vary;\n"
            "  add_header Access-Control-Allow-Origin $upstream_http_access_control_allow_origin;\n"
            "  add_header Access-Control-Expose-Headers $upstream_http_access_control_expose_headers;\n"
            "  add_header X-Content-Type-Options $upstream_http_x_content_type_options;\n"
            "  add_header X-Request-ID $upstream_http_x_request_id;\n"
            "}\n"
        )
    return "".join(out)


class Nginx:
    """nginx in the foreground with a temporary prefix, proxying to ``upstreams``."""

    def __init__(self, upstreams: list[str], extra_locations: str = "", *, http=None) -> None:
        """``http``: instead of the upstream and server made here, a function from the port to
        listen on to the text of nginx's http context (e.g. ``ngserve nginx-config``'s output)."""
        if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
            raise RuntimeError("nginx is not installed: apt-get install -y nginx")
        self.dir = Path(tempfile.mkdtemp(prefix="ngserve-nginx-"))
        self.port = free_port()
        servers = "".join(f"  server {u} max_fails=1 fail_timeout=30s;\n" for u in upstreams)
        user = "user root;\n" if os.geteuid() == 0 else ""  # its workers must read the tests' temporary folders
        (self.dir / "nginx.conf").write_text(
            f"daemon off;\n{user}worker_processes 1;\npid {self.dir}/nginx.pid;\nerror_log {self.dir}/error.log;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"  access_log off;\n  client_body_temp_path {self.dir};\n  proxy_temp_path {self.dir};\n"
            + (http(self.port) + "}\n" if http else
            f"  upstream ngserve {{\n{servers}  keepalive 8;\n  }}\n"
            "  server {\n"
            f"    listen 127.0.0.1:{self.port};\n"
            "    location / {\n"
            "      proxy_pass http://ngserve;\n"
            "      proxy_http_version 1.1;\n"
            "      proxy_set_header Connection \"\";\n"
            "      proxy_set_header Host $http_host;\n"
            "      proxy_set_header X-Request-ID $request_id;\n"
            # Clients may not say who they are: ngserve trusts these headers from this proxy.
            "      proxy_set_header X-Forwarded-User \"\";\n      proxy_set_header X-Forwarded-Email \"\";\n"
            "      proxy_next_upstream error timeout http_502;\n"
            "      proxy_connect_timeout 2s;\n"
            "      proxy_buffering off;\n"  # as the README advises: X-Accel-Redirect works the same
            "      proxy_buffer_size 256k;\n      proxy_buffers 4 256k;\n      proxy_busy_buffers_size 256k;\n"
            "    }\n"
            f"{extra_locations}"
            "  }\n"
            "}\n")
        )
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([exe, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for_port(self.port, self.proc, "nginx")

    def close(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
