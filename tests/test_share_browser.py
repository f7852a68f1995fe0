"""A collaborator without an account opens share links to protected mounts in the built-in viewer.

The links come from ``ngserve link --token-ttl`` (a WebDAV mount and a local
mount, both token-only) and from ``/-/open/<path>?token=…``.  The browser has
no cookies and no credentials: only the tokens in the source URLs.
"""

from __future__ import annotations

import os
import subprocess
import sys

from browser import browser_page, rendered_fraction, viewer_status_text, wait_until
from webdav_server import WebDAVServer

from server.commands.demo import DEMO_NAME, write_demo
from server.tokens import mint

SECRET = "share-browser-secret-0123456789abcdef"
IMAGE_CHUNK = rf'"GET /-/t/REDACTED/lab/{DEMO_NAME}/\d+/\d+/\d+/\d+ HTTP'
LABEL_CHUNK = rf'"GET /-/t/REDACTED/vault/{DEMO_NAME}/labels/cells/\d+/\d+/\d+/\d+ HTTP'


def test_collaborator_opens_minted_links_without_an_account(tmp_path, start_server):
    (tmp_path / "dav").mkdir()
    (tmp_path / "local").mkdir()
    write_demo(tmp_path / "dav")
    write_demo(tmp_path / "local")
    dav = WebDAVServer(tmp_path / "dav")
    try:
        config = tmp_path / "ngserve.toml"
        config.write_text(f"""
[auth]
secret_env = "NGSERVE_TEST_SECRET"
[[mounts]]
name = "lab"
source = "webdav+{dav.url}/"
access = "token"
[mounts.upstream]
username = "{dav.user}"
password_env = "DAV_PW"
[[mounts]]
name = "vault"
source = "{tmp_path / 'local'}"
access = "token"
""")
        env = dict(os.environ, DAV_PW=dav.password, NGSERVE_TEST_SECRET=SECRET)
        srv = start_server("serve", "--config", str(config), env=env)
        r = subprocess.run(
            [sys.executable, "-m", "server", "link", "--token-ttl", "1h", "--config", str(config),
             f"{srv.url}/lab/{DEMO_NAME}", f"{srv.url}/vault/{DEMO_NAME}/labels/cells"],
            capture_output=True, text=True, env=env, timeout=180,
        )
        assert r.returncode == 0, r.stderr
        minted = r.stdout.strip()
        assert minted.startswith(f"{srv.url}/-/viewer/")
        with browser_page() as (page, errors):
            page.goto(minted)
            assert wait_until(lambda: len(srv.requested(IMAGE_CHUNK)) >= 4 and len(srv.requested(LABEL_CHUNK)) >= 4), \
                "chunks not fetched:\n" + "".join(srv.log[-30:])
            status = viewer_status_text(page)
            drawn = rendered_fraction(page)
            assert page.context.cookies() == []  # no account, no session: only the tokens in the link

            # The same collaborator, sent to /-/open with a token for the image only.
            before = len(srv.requested(IMAGE_CHUNK))
            token = mint(SECRET.encode(), "lab", DEMO_NAME, 600)
            page.goto(f"{srv.url}/-/open/lab/{DEMO_NAME}?token={token}")
            assert wait_until(lambda: len(srv.requested(IMAGE_CHUNK)) >= before + 4), \
                "no chunks after /-/open:\n" + "".join(srv.log[-30:])
            open_status = viewer_status_text(page)
            open_drawn = rendered_fraction(page)
        assert errors.page_errors == []
        for line in srv.requested(IMAGE_CHUNK) + srv.requested(LABEL_CHUNK):
            assert " 200 " in line and " token:" in line, line
        assert not [line for line in srv.log if '" 401 ' in line or '" 403 ' in line]
        assert "Error" not in status + open_status, status + open_status
        assert drawn > 0.05, drawn
        assert open_drawn > 0.05, open_drawn
    finally:
        dav.kill()
