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


def test_demo_labels_link_opens_the_labels(tmp_path, start_server):
    srv = start_server("demo", "--out", str(tmp_path))
    page = get(f"{srv.url}/demo.ome.zarr/")[2]
    assert 'href="/-/open/demo.ome.zarr/labels"' in page
    status, headers, body = get(f"{srv.url}/-/open/demo.ome.zarr/labels")
    assert status == 302, body
    (layer,) = ngstate.parse_url(headers["Location"])["layers"]
    assert layer["type"] == "segmentation" and layer["name"] == "cells"
    assert layer["source"] == f"zarr2://{srv.url}/demo.ome.zarr/labels/cells/"
