"""The built-in viewer, in headless Chromium, renders the demo dataset."""

from __future__ import annotations

import signal
import urllib.request

from browser import (
    assert_only_metadata_probes_failed,
    browser_page,
    rendered_fraction,
    viewer_status_text,
    wait_until,
)

CHUNK = r'"GET /demo\.ome\.zarr/\d+/\d+/\d+/\d+ HTTP'


def test_open_demo_renders_chunks(start_server, tmp_path):
    srv = start_server("demo", "--out", str(tmp_path))
    with browser_page() as (page, errors):
        page.goto(srv.url + "/-/open/demo.ome.zarr")
        assert page.url.startswith(srv.url + "/-/viewer/v/ngserve/#!"), page.url
        assert wait_until(lambda: len(srv.requested(CHUNK)) >= 4), "viewer fetched no chunks:\n" + "".join(srv.log)
        page.wait_for_timeout(2000)
        status = viewer_status_text(page)
        assert_only_metadata_probes_failed(srv, errors)
        # The layer draws a good part of the screen: hiding it changes that much.
        drawn = rendered_fraction(page)
    assert "Disconnected" not in status and "Error" not in status, status
    assert all(" 200 " in line for line in srv.requested(CHUNK))
    assert drawn > 0.05, drawn


def test_viewer_paths_answer(start_server, tmp_path):
    srv = start_server("serve", str(tmp_path))
    with urllib.request.urlopen(srv.url + "/-/viewer/") as r:
        assert r.url == srv.url + "/-/viewer/v/ngserve/"
        assert b"<script" in r.read()
    with urllib.request.urlopen(srv.url + "/-/viewer/events/ngserve?c=x&gc=&gs=", timeout=5) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        assert r.readline().startswith(b":")


def test_open_event_stream_does_not_delay_shutdown(start_server, tmp_path):
    srv = start_server("serve", str(tmp_path))
    stream = urllib.request.urlopen(srv.url + "/-/viewer/events/ngserve?c=x&gc=&gs=", timeout=5)
    assert stream.readline().startswith(b":")
    srv.stop()  # SIGTERM, and SIGKILL only if the server has not ended by itself
    assert srv.proc.returncode != -signal.SIGKILL, "the open event stream held up shutdown"
    stream.close()
