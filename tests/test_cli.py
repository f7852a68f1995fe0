"""Bad command-line input: exit status 2 and one clear line, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest


def ngserve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *args], capture_output=True, text=True, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_missing_dir(tmp_path):
    assert_one_line_error(ngserve("serve", str(tmp_path / "nope")), "does not exist", "nope")


def test_dir_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    assert_one_line_error(ngserve("serve", str(f)), "is not a folder")


def test_nothing_to_serve():
    assert_one_line_error(ngserve("serve"), "nothing to serve")


@pytest.mark.parametrize("mount", ["novalue", "=dir", "name=", "-=/tmp", "a/b=/tmp"])
def test_malformed_mount(tmp_path, mount):
    assert_one_line_error(ngserve("serve", str(tmp_path), "--mount", mount), "mount")


def test_duplicate_mount(tmp_path):
    result = ngserve("serve", "--mount", f"a={tmp_path}", "--mount", f"a={tmp_path}")
    assert_one_line_error(result, "used twice")


def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert_one_line_error(ngserve("serve", str(tmp_path), "--port", str(port)), "already in use", str(port))


def test_bad_port_value(tmp_path):
    assert_one_line_error(ngserve("serve", str(tmp_path), "--port", "http"), "--port")
    assert_one_line_error(ngserve("serve", str(tmp_path), "--port", "70000"), "70000")


def test_unknown_command():
    assert_one_line_error(ngserve("frobnicate"), "frobnicate")


def test_help_lists_commands():
    result = ngserve("--help")
    assert result.returncode == 0
    for command in ["serve", "demo"]:
        assert command in result.stdout


def test_open_launches_the_browser_on_the_landing_page(start_server, tmp_path):
    # webbrowser honours $BROWSER; this "browser" writes down the URL it was given.
    opened = tmp_path / "opened.txt"
    env = {**os.environ, "BROWSER": f"sh -c 'echo %s > {opened}'"}
    srv = start_server("serve", str(tmp_path), "--open", env=env)
    assert wait_for_file(opened).strip() == srv.url + "/"


def test_demo_open_launches_the_viewer(start_server, tmp_path):
    # The URL carries a JSON state, so the "browser" writes it without a shell in between.
    opened = tmp_path / "opened.txt"
    script = tmp_path / "browser.py"
    script.write_text(f"import sys; open({str(opened)!r}, 'w').write(sys.argv[1])")
    env = {**os.environ, "BROWSER": f"{sys.executable} {script} %s"}
    srv = start_server("demo", "--out", str(tmp_path / "d"), "--open", env=env)
    url = wait_for_file(opened).strip()
    assert url == next(line.split(" ", 2)[2].strip() for line in srv.stdout if line.startswith("ngserve: open "))
    assert url.startswith(srv.url + "/-/viewer/v/ngserve/#!")


def wait_for_file(path, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"nothing was opened: {path} was never written")


def test_second_multi_worker_server_on_a_used_port_fails(start_server, tmp_path):
    first = start_server("serve", str(tmp_path), "--workers", "2")
    port = first.url.rsplit(":", 1)[1]
    result = ngserve("serve", str(tmp_path), "--workers", "2", "--port", port)
    assert_one_line_error(result, "already in use", port)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--mount", "x=https://"], ["https://"]),
        (["--data-dir", "__FILE__"], ["cannot start"]),
    ],
)
def test_bad_source_or_data_dir_fails_before_serving(tmp_path, args, words):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    args = [str(blocker) if a == "__FILE__" else a for a in args]
    result = ngserve("serve", str(tmp_path), *args)
    assert "serving on" not in result.stdout
    assert_one_line_error(result, *words)


def test_malformed_requests_are_one_log_line_each(tmp_path, start_server):
    """aiohttp logs a request its parser rejects with a traceback at ERROR; a hostile client could
    flood the log that way.  The client gets its 400 and the log one line."""
    import socket

    srv = start_server("serve", str(tmp_path))
    host, port = srv.url.removeprefix("http://").split(":")
    for payload in (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n"):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(payload)
            assert s.recv(100).startswith(b"HTTP/1.0 400")
    srv.settle()
    assert len(srv.requested("bad request: ")) == 2
    assert not [line for line in srv.log if "Traceback" in line or "ERROR" in line]


def test_version():
    from importlib.metadata import version

    result = ngserve("--version")
    assert result.returncode == 0 and result.stdout == f"ngserve {version('ngserve')}\n"


def test_a_closed_pipe_ends_quietly(tmp_path):
    """``ngserve inspect … | head -0``: the reader is gone before we write; no traceback."""
    from volumes import write_ome_zarr
    import numpy as np

    write_ome_zarr(tmp_path / "img.ome.zarr", np.zeros((8, 8, 8), np.uint8), levels=1)
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the command writes anything
    proc = subprocess.run([sys.executable, "-m", "server", "inspect", str(tmp_path / "img.ome.zarr")],
                          stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(write)
    assert proc.stderr == "" and proc.returncode == 1


def test_demo_options_have_help():
    out = ngserve("demo", "--help").stdout
    assert "address to listen on" in out and "port to listen on" in out
