"""``/-/open`` against a real server: it reads a mount as the data server serves it, and its errors
name URL paths only."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import numpy as np
import pytest

import ngstate
from volumes.write import write_ome_zarr


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url: str) -> tuple[int, dict, str]:
    try:
        with urllib.request.build_opener(_NoRedirect).open(url, timeout=60) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_open_does_not_follow_a_symlink_out_of_the_mount(tmp_path, start_server):
    """The data server answers 404 for a symlink leaving the root; /-/open must not read through it either."""
    pub, secret = tmp_path / "pub", tmp_path / "secret"
    write_ome_zarr(pub / "img.ome.zarr", np.full((8, 8, 8), 100, np.uint16), levels=1)
    write_ome_zarr(secret / "big.ome.zarr", np.full((9, 10, 11), 4321, np.uint16), levels=1)
    os.rename(pub / "img.ome.zarr" / "0", tmp_path / "inside-level")
    os.symlink(secret / "big.ome.zarr" / "0", pub / "img.ome.zarr" / "0")
    srv = start_server("serve", "--mount", f"pub={pub}")
    assert get(f"{srv.url}/pub/img.ome.zarr/0/.zarray")[0] == 404

    status, _, body = get(f"{srv.url}/-/open/pub/img.ome.zarr")
    assert status == 422, body
    assert body == "cannot show /pub/img.ome.zarr: no zarr v2 array at /pub/img.ome.zarr/0\n"

    # The same dataset with its level inside the mount opens.
    os.unlink(pub / "img.ome.zarr" / "0")
    os.rename(tmp_path / "inside-level", pub / "img.ome.zarr" / "0")
    status, headers, body = get(f"{srv.url}/-/open/pub/img.ome.zarr")
    assert status == 302, body
    state = ngstate.parse_url(headers["Location"])
    assert state["layers"][0]["source"] == f"zarr2://{srv.url}/pub/img.ome.zarr/"


def test_open_errors_name_url_paths_not_disk_paths(tmp_path, start_server):
    pub = tmp_path / "pub"
    (pub / "bad.zarr").mkdir(parents=True)
    (pub / "bad.zarr" / ".zarray").write_text("{not json")
    write_ome_zarr(pub / "broken.ome.zarr", np.ones((8, 8, 8), np.uint16), levels=1)
    for chunk in (pub / "broken.ome.zarr" / "0").rglob("[0-9]*"):
        if chunk.is_file():  # metadata fine, data unreadable: tensorstore's message names the URL
            chunk.write_bytes(b"not a blosc chunk")
    srv = start_server("serve", "--mount", f"pub={pub}")

    status, _, body = get(f"{srv.url}/-/open/pub/bad.zarr")
    assert (status, body) == (422, "cannot show /pub/bad.zarr: /pub/bad.zarr/.zarray is not valid JSON\n")
    status, _, body = get(f"{srv.url}/-/open/pub/broken.ome.zarr")
    assert status == 422 and body.startswith("cannot show /pub/broken.ome.zarr: "), body
    print(body)
    assert "/pub/broken.ome.zarr/0/" in body, body
    assert str(tmp_path) not in body and "127.0.0.1" not in body, body


def test_deeply_nested_metadata_is_an_error_line_not_a_500(tmp_path, start_server):
    """json raises RecursionError (not ValueError) past its nesting limit: it once escaped as a 500."""
    pub = tmp_path / "pub"
    deep = "[" * 100000 + "]" * 100000
    (pub / "deep.zarr").mkdir(parents=True)
    (pub / "deep.zarr" / ".zarray").write_text(deep)
    (pub / "deepgroup.zarr").mkdir()
    (pub / "deepgroup.zarr" / ".zgroup").write_text('{"zarr_format": 2}')
    (pub / "deepgroup.zarr" / ".zattrs").write_text(deep)  # read by the listing, to decide on an open link
    srv = start_server("serve", "--mount", f"pub={pub}")
    status, _, page = get(f"{srv.url}/pub/")
    assert status == 200 and 'href="deepgroup.zarr/"' in page and "/-/open/pub/deepgroup.zarr" not in page
    status, _, body = get(f"{srv.url}/-/open/pub/deep.zarr")
    assert (status, body) == (422, "cannot show /pub/deep.zarr: /pub/deep.zarr/.zarray is not valid JSON\n")
    status, _, body = get(f"{srv.url}/-/open/pub/deepgroup.zarr")
    assert status == 422 and body.count("\n") == 1, body


def _image_with_labels(folder, zarr_version: int):
    """An OME-Zarr image (anisotropic, offset) whose labels/ group lists two label images."""
    from volumes import add_labels_group

    kw = dict(voxel_size=(0.5, 0.25, 0.2), translation=(2.0, 1.0, 3.0), levels=2, zarr_version=zarr_version)
    image = folder / f"img{zarr_version}.ome.zarr"
    write_ome_zarr(image, np.arange(8 * 10 * 12, dtype=np.uint16).reshape(8, 10, 12), **kw)
    labels = add_labels_group(image, ["nuclei", "cells"], zarr_version=zarr_version)
    for i, name in enumerate(["nuclei", "cells"]):
        data = np.zeros((8, 10, 12), np.uint32)
        data[2:6, 3:7, 4 + i : 8 + i] = i + 1
        write_ome_zarr(labels / name, data, label=True, method="mode", **kw)
    return image


@pytest.mark.parametrize("zarr_version", [2, 3])
def test_open_a_labels_group_shows_every_label_image(tmp_path, start_server, zarr_version):
    pub = tmp_path / "pub"
    image = _image_with_labels(pub, zarr_version)
    srv = start_server("serve", "--mount", f"pub={pub}")
    name = image.name
    page = get(f"{srv.url}/pub/{name}/")[2]
    assert f'href="/-/open/pub/{name}/labels"' in page

    status, headers, body = get(f"{srv.url}/-/open/pub/{name}/labels")
    assert status == 302, body
    state = ngstate.parse_url(headers["Location"])
    served = {str(pub): f"{srv.url}/pub"}
    alone = ngstate.build_state([image / "labels" / "nuclei", image / "labels" / "cells"], served_at=served).to_json()
    assert state == alone
    assert [(layer["type"], layer["name"]) for layer in state["layers"]] == [
        ("segmentation", "nuclei"), ("segmentation", "cells")]
    # Aligned like the image: the same dimensions and, for each, the image's own placement.
    with_image = ngstate.build_state([image, image / "labels" / "nuclei"], served_at=served).to_json()
    assert state["dimensions"] == with_image["dimensions"]
    assert state["layers"][0]["source"] == with_image["layers"][1]["source"]


def test_a_plain_zarr_group_gets_no_viewer_link(tmp_path, start_server):
    pub = tmp_path / "pub"
    (pub / "v2group.zarr" / "sub").mkdir(parents=True)
    (pub / "v2group.zarr" / ".zgroup").write_text('{"zarr_format": 2}')
    (pub / "v2attrs.zarr").mkdir()
    (pub / "v2attrs.zarr" / ".zgroup").write_text('{"zarr_format": 2}')
    (pub / "v2attrs.zarr" / ".zattrs").write_text('{"note": "no image here"}')
    (pub / "v3group.zarr").mkdir()
    (pub / "v3group.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    srv = start_server("serve", "--mount", f"pub={pub}")
    page = get(f"{srv.url}/pub/")[2]
    assert 'href="v2group.zarr/"' in page and "/-/open" not in page, page
    assert "/-/open" not in get(f"{srv.url}/pub/v2group.zarr/")[2]

    for name, found in [("v2group.zarr", "a zarr v2 group that is neither an OME multiscale image nor a labels "
                                         "group (attributes: none)"),
                        ("v2attrs.zarr", "a zarr v2 group that is neither an OME multiscale image nor a labels "
                                         "group (attributes: note)"),
                        ("v3group.zarr", "a zarr v3 group that is neither an OME multiscale image nor a labels "
                                         "group (attributes: none)")]:
        status, _, body = get(f"{srv.url}/-/open/pub/{name}")
        assert (status, body) == (422, f"cannot show /pub/{name}: {found}\n")  # the path named once
    assert get(f"{srv.url}/-/open/pub/absent.zarr")[0] == 404


def test_an_n5_root_group_leads_to_its_first_dataset(tmp_path, start_server):
    import json

    from volumes.write import write_n5

    pub = tmp_path / "pub"
    root = pub / "jrc.n5"
    write_n5(root / "em" / "fibsem", np.arange(8 * 16 * 16, dtype=np.uint8).reshape(8, 16, 16),
             convention="cosem", voxel_size_xyz=(4, 4, 5))
    (root / "attributes.json").write_text(json.dumps({"n5": "2.5.0"}))
    (root / "em" / "attributes.json").write_text("{}")
    (pub / "empty.n5" / "nothing").mkdir(parents=True)
    (pub / "empty.n5" / "attributes.json").write_text(json.dumps({"n5": "2.5.0"}))
    srv = start_server("serve", "--mount", f"pub={pub}")
    assert 'href="/-/open/pub/jrc.n5"' in get(f"{srv.url}/pub/")[2]

    status, headers, body = get(f"{srv.url}/-/open/pub/jrc.n5")
    assert status == 302, body
    assert headers["Location"] == f"{srv.url}/-/open/pub/jrc.n5/em/fibsem"
    status, headers, body = get(headers["Location"])
    assert status == 302, body
    assert "/pub/jrc.n5/em/fibsem" in ngstate.parse_url(headers["Location"])["layers"][0]["source"]["url"]
    # A group inside leads on as well; the share token in the query goes along.
    assert get(f"{srv.url}/-/open/pub/jrc.n5/em?token=T")[1]["Location"] == \
        f"{srv.url}/-/open/pub/jrc.n5/em/fibsem?token=T"

    status, _, body = get(f"{srv.url}/-/open/pub/empty.n5")
    assert (status, body) == (422, "cannot show /pub/empty.n5: an N5 group with no array or multiscale group "
                                   "inside (looked 4 levels down)\n")


def test_demo_labels_link_opens_the_labels(tmp_path, start_server):
    srv = start_server("demo", "--out", str(tmp_path))
    page = get(f"{srv.url}/demo.ome.zarr/")[2]
    assert 'href="/-/open/demo.ome.zarr/labels"' in page
    status, headers, body = get(f"{srv.url}/-/open/demo.ome.zarr/labels")
    assert status == 302, body
    (layer,) = ngstate.parse_url(headers["Location"])["layers"]
    assert layer["type"] == "segmentation" and layer["name"] == "cells"
    assert layer["source"] == [f"zarr2://{srv.url}/demo.ome.zarr/labels/cells/",
                               f"precomputed://{srv.url}/-/mesh/demo.ome.zarr/labels/cells"]


def test_concurrent_opens_never_wedge_the_server(tmp_path, start_server):
    """Four times the default executor's threads of /-/open at once, on data whose chunks the
    server streams through that executor: each open answers (302, or 503 when the queue is
    full), and afterwards large files, listings and opens are served as before.  (Before the
    builder had its own bounded pool, nine such opens hung every large read for good.)"""
    import concurrent.futures
    import tensorstore as ts

    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (256, 256, 256), dtype=np.uint8)
    for i in range(3):  # raw 2 MiB chunks: past the small-file cache, read on the executor
        ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(tmp_path / f"v{i}.zarr")},
                 "metadata": {"shape": list(data.shape), "chunks": [128, 128, 128], "dtype": "|u1",
                              "compressor": None}}, create=True).result().write(data).result()
    srv = start_server("serve", str(tmp_path), "--quiet")
    n = 4 * min(32, (os.cpu_count() or 1) + 4)
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda i: get(f"{srv.url}/-/open/v{i % 3}.zarr"), range(n)))
    statuses = [a[0] for a in answers]
    assert set(statuses) <= {302, 503}, statuses
    assert 302 in statuses and 503 in statuses, statuses  # some built, the rest were turned away at once
    assert all(h.get("Retry-After") for s, h, _ in answers if s == 503)
    with urllib.request.urlopen(f"{srv.url}/v0.zarr/0.0.0", timeout=30) as r:
        assert r.read() == data[:128, :128, :128].tobytes()
    assert get(f"{srv.url}/v1.zarr/")[0] == 200
    assert get(f"{srv.url}/-/open/v2.zarr")[0] == 302


async def test_build_pool_caps_queues_and_times_out():
    """Unit behaviour of the /-/open pool: the cap answers 503, the deadline 504, and an
    overrunning build keeps its slot until its thread really ends."""
    import asyncio
    import threading

    from aiohttp import web
    from server.builds import BuildPool

    release = threading.Event()
    pool = BuildPool(threads=1, queue=1, timeout=0.2)
    with pytest.raises(web.HTTPGatewayTimeout):
        await pool.run(release.wait)
    assert pool.pending == 1  # still running: still counted
    queued = asyncio.ensure_future(pool.run(lambda: 7))
    await asyncio.sleep(0.05)
    with pytest.raises(web.HTTPServiceUnavailable) as refused:
        await pool.run(lambda: 8)
    assert refused.value.headers["Retry-After"]
    release.set()
    assert await queued == 7
    await asyncio.sleep(0.05)
    assert pool.pending == 0
    assert await pool.run(lambda: 9) == 9
    pool.shutdown()
