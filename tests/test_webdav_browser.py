"""The built-in viewer, signed in at /-/login, renders a dataset from a protected WebDAV mount."""

from __future__ import annotations

import os

from browser import browser_page, rendered_fraction, viewer_status_text, wait_until
from webdav_server import WebDAVServer

from ngstate import State
from server.commands.demo import DEMO_NAME, write_demo
from server.passwords import hash_password
from server.viewer import viewer_url

CHUNK = r'"GET /lab/demo\.ome\.zarr/\d+/\d+/\d+/\d+ HTTP'


def test_login_then_viewer_renders_webdav_dataset(tmp_path, start_server):
    root = tmp_path / "dav"
    root.mkdir()
    write_demo(root)
    dav = WebDAVServer(root)
    try:
        (tmp_path / "secret").write_text("browser-test-secret-0123456789abcdef")
        config = tmp_path / "ngserve.toml"
        config.write_text(f"""
[auth]
secret_file = "secret"
[[mounts]]
name = "lab"
source = "webdav+{dav.url}/"
access = "users"
[mounts.upstream]
username = "{dav.user}"
password_env = "DAV_PW"
[[users]]
name = "alice"
password_hash = "{hash_password('alice-in-the-browser')}"
""")
        srv = start_server("serve", "--config", str(config), env=dict(os.environ, DAV_PW=dav.password))
        # "localhost" is a secure context, so Chromium keeps the Secure session cookie over plain http.
        base = srv.url.replace("127.0.0.1", "localhost")
        with browser_page() as (page, errors):
            page.goto(f"{base}/lab/{DEMO_NAME}/")
            assert "401" in page.content()  # not signed in yet
            page.goto(f"{base}/-/login?next=/lab/")
            page.fill("input[name=user]", "alice")
            page.fill("input[name=password]", "alice-in-the-browser")
            page.click("input[type=submit]")
            page.wait_for_url(f"{base}/lab/")
            assert DEMO_NAME in page.content()  # the session cookie opened the mount's listing
            # The state as /-/open builds it, from the same files, pointing at the protected mount.
            state = State()
            state.add(str(root / DEMO_NAME), url=f"{base}/lab/{DEMO_NAME}")
            page.goto(viewer_url(state.to_json(), base))
            assert wait_until(lambda: len(srv.requested(CHUNK)) >= 4), "no chunks fetched:\n" + "".join(srv.log)
            status = viewer_status_text(page)
            drawn = rendered_fraction(page)
        assert errors.page_errors == []
        chunks = srv.requested(CHUNK)
        assert all(" 200 " in line and "user:alice" in line for line in chunks), chunks
        assert "Error" not in status, status
        assert drawn > 0.05, drawn
    finally:
        dav.kill()
