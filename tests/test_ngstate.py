"""ngstate: states for every format, checked against the neuroglancer package itself."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import neuroglancer
import pytest

import ngstate
from volumes.samples import write_samples

BASE = "http://data.example:9000/d"
VIEWER = "https://viewer.example/"


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return write_samples(tmp_path_factory.mktemp("samples"))


def state_of(samples, *names, **options):
    options.setdefault("viewer", VIEWER)
    options.setdefault("labels", False)  # these tests look at each source's own layer
    sources = [samples[n] for n in names]
    st = ngstate.build_state(sources, served_at={str(sources[0].parent): BASE}, **options)
    return st, st.to_json()


def assert_round_trips(state: dict, viewer: str = VIEWER) -> None:
    """Unchanged through ViewerState and through to_url/parse_url; our URL is neuroglancer's."""
    vs = neuroglancer.ViewerState(state)
    assert vs.to_json() == state
    assert neuroglancer.parse_url(neuroglancer.to_url(vs, prefix=viewer)).to_json() == state
    assert ngstate.encode_fragment(state) == neuroglancer.to_url(vs, prefix=viewer)[len(viewer):]


def close(values):
    return pytest.approx(values, rel=1e-9, abs=1e-12)


def test_ome_04_image_uses_neuroglancers_own_reading(samples):
    st, s = state_of(samples, "ome04")
    (layer,) = s["layers"]
    assert layer["type"] == "image" and layer["name"] == "cells"
    assert layer["source"] == f"zarr2://{BASE}/cells.ome.zarr/"  # names, units, offset: Neuroglancer's own
    assert list(s["dimensions"]) == ["x", "y", "z"]
    assert s["dimensions"] == {"x": [close(2e-7), "m"], "y": [close(2.5e-7), "m"], "z": [close(5e-7), "m"]}
    # x: voxel 0's corner at 3 µm / 0.2 - 0.5 = 14.5, 70 voxels -> centre 49.5 (z: 3.5 + 10, y: 3.5 + 22.5)
    assert s["position"] == close([49.5, 26.0, 13.5])
    lo, hi = layer["shaderControls"]["normalized"]["range"]
    assert 1000 <= lo < hi <= 1400
    assert s["layout"] == "4panel"
    assert_round_trips(s)
    assert st.to_url() == neuroglancer.to_url(neuroglancer.ViewerState(s), prefix=VIEWER)


def test_ome_labels_image_and_labels_line_up(samples):
    _, s = state_of(samples, "ome04", "ome04_labels")
    image, labels = s["layers"]
    assert labels["type"] == "segmentation" and "shaderControls" not in labels
    assert labels["source"] == f"zarr2://{BASE}/cells.ome.zarr/labels/nuclei/"
    assert s["position"] == close([49.5, 26.0, 13.5])
    assert_round_trips(s)


def test_ome_05_channels_are_local_and_contrast_is_the_omero_window(samples):
    _, s = state_of(samples, "ome05")
    (layer,) = s["layers"]
    assert layer["source"] == f"zarr3://{BASE}/twochannel.ome.zarr/"
    assert layer["localDimensions"] == {"c'": [1.0, ""]}
    assert layer["localPosition"] == [0.0]  # OME's half-voxel shift applies to c too: channel 0 is centred at 0
    assert layer["shaderControls"] == {"normalized": {"range": [1000, 1300]}}
    assert s["dimensions"] == {"x": [close(4e-7), "m"], "y": [close(4e-7), "m"], "z": [close(1e-6), "m"]}
    assert s["position"] == close([34.5, 22.0, 9.5])
    assert_round_trips(s)


def test_plain_zarr_keeps_neuroglancers_names(samples):
    _, s = state_of(samples, "zarr2")
    (layer,) = s["layers"]
    assert layer["source"] == f"zarr2://{BASE}/raw.zarr/" and layer["type"] == "image"
    assert s["dimensions"] == {"d0": [1.0, ""], "d1": [1.0, ""], "d2": [1.0, ""]}
    assert s["position"] == [10.0, 22.5, 35.0]
    lo, hi = layer["shaderControls"]["normalized"]["range"]
    assert -1.0 <= lo < hi <= 2.0
    assert_round_trips(s)


def test_label_names_and_uint64_make_segmentations(samples):
    _, s = state_of(samples, "zarr3_seg", "zarr2_u64")
    assert [(l["type"], l["name"]) for l in s["layers"]] == [("segmentation", "cells_seg"), ("segmentation", "ids")]
    assert s["layers"][0]["source"] == f"zarr3://{BASE}/cells_seg.zarr/"
    assert list(s["dimensions"]) == ["x", "y", "z", "d0", "d1", "d2"]
    assert_round_trips(s)


def test_kind_override(samples):
    _, s = state_of(samples, "ome04", kinds=["segmentation"])
    assert s["layers"][0]["type"] == "segmentation" and "shaderControls" not in s["layers"][0]
    with pytest.raises(ValueError, match="annotation directory"):
        state_of(samples, "points", kinds="image")


def test_n5_neuroglancer_convention_needs_no_transform(samples):
    _, s = state_of(samples, "n5_ng")
    assert s["layers"][0]["source"] == f"n5://{BASE}/ng.n5/"
    assert s["dimensions"] == {"x": [close(4e-9), "m"], "y": [close(4e-9), "m"], "z": [close(4e-8), "m"]}
    assert s["position"] == [35.0, 22.5, 10.0]
    assert_round_trips(s)


def test_n5_viewer_convention_opens_the_level_the_client_can_read(samples):
    # The group gives Neuroglancer no rank ("Unable to determine rank of dataset"); s0's own
    # pixelResolution it reads, so that level needs no transform.
    _, s = state_of(samples, "n5_viewer")
    assert s["layers"][0]["source"] == f"n5://{BASE}/viewer.n5/s0/"
    assert s["dimensions"] == {"x": [8e-9, "m"], "y": [8e-9, "m"], "z": [3e-8, "m"]}
    assert_round_trips(s)


def test_n5_cosem_translation(samples):
    _, s = state_of(samples, "n5_cosem")
    src = s["layers"][0]["source"]
    assert src["url"] == f"n5://{BASE}/cosem.n5/s0/"
    assert src["transform"]["outputDimensions"] == {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [4e-9, "m"]}
    # translate (100, 200, 300) nm at voxel centres of 4 nm -> corners at 24.5, 49.5, 74.5 voxels
    assert src["transform"]["matrix"] == [[1, 0, 0, 24.5], [0, 1, 0, 49.5], [0, 0, 1, 74.5]]
    assert s["position"] == close([24.5 + 35, 49.5 + 22.5, 74.5 + 10])
    assert_round_trips(s)


def test_precomputed_image_segmentation_and_linked_annotations(samples):
    _, s = state_of(samples, "pc_image", "pc_seg", "points", segments=[3, 5], opacity=0.8,
                    names=["em", "cells", "synapses"], layout="xy-3d")
    em, cells, points = s["layers"]
    assert em["source"] == f"precomputed://{BASE}/pc_image" and em["type"] == "image"
    assert 1000 <= em["shaderControls"]["normalized"]["range"][0]
    assert cells["type"] == "segmentation" and cells["segments"] == ["3", "5"]
    assert points["type"] == "annotation" and points["source"] == f"precomputed://{BASE}/points"
    assert points["linkedSegmentationLayer"] == {"cell": "cells"}
    assert all(l["opacity"] == 0.8 for l in s["layers"])
    assert s["dimensions"] == {"x": [close(8e-9), "m"], "y": [close(8e-9), "m"], "z": [close(4e-8), "m"]}
    assert s["position"] == [45.0, 42.5, 15.0]  # voxel_offset (10, 20, 5) + half of (70, 45, 20)
    assert s["layout"] == "xy-3d"
    assert_round_trips(s)


def test_annotations_link_to_the_matching_segmentation(samples):
    two = ("pc_seg", "zarr3_seg", "points")  # the points' relationship is "cell"
    _, s = state_of(samples, *two, names=["nuclei", "cell", "synapses"])
    assert s["layers"][2]["linkedSegmentationLayer"] == {"cell": "cell"}  # by name, not the first segmentation
    st, s = state_of(samples, *two)
    assert "linkedSegmentationLayer" not in s["layers"][2]  # two candidates, neither named "cell": no guess
    assert ("layer 'points': relationship 'cell' is linked to no layer: "
            "2 segmentation layers, none named 'cell'") in st.notes
    _, s = state_of(samples, *two, links=[None, None, {"cell": "cells_seg"}])
    assert s["layers"][2]["linkedSegmentationLayer"] == {"cell": "cells_seg"}
    assert_round_trips(s)
    with pytest.raises(ValueError, match="no segmentation layer named 'em'"):
        state_of(samples, *two, links="em")
    with pytest.raises(ValueError, match="has no relationship synapse"):
        state_of(samples, *two, links=[None, None, {"synapse": "pc_seg"}])


def test_cli_link_links_annotations_and_notes_what_it_cannot(samples):
    folder = str(samples["ome04"].parent)
    common = [str(samples["pc_seg"]), str(samples["zarr3_seg"]), str(samples["points"]),
              "--served-at", f"{folder}={BASE}", "--viewer", VIEWER, "--json"]
    r = _cli("link", *common)
    assert r.returncode == 0 and "note: layer 'points': relationship 'cell' is linked to no layer" in r.stderr
    r = _cli("link", *common, "--link", "cell=pc_seg")
    assert r.returncode == 0 and "relationship" not in r.stderr
    assert json.loads(r.stdout)["layers"][2]["linkedSegmentationLayer"] == {"cell": "pc_seg"}
    r = _cli("link", *common, "--link", "synapse=pc_seg")
    assert r.returncode == 2 and "no annotation layer has that relationship" in r.stderr


def test_visibility_position_and_names(samples):
    _, s = state_of(samples, "ome04", "ome04_labels", visible=[True, False], position=[1, 2, 3],
                    names=["raw", "seg"])
    assert [l["name"] for l in s["layers"]] == ["raw", "seg"]
    assert "visible" not in s["layers"][0] and s["layers"][1]["visible"] is False
    assert s["position"] == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="position has 2 values"):
        state_of(samples, "ome04", position=[1, 2])
    with pytest.raises(ValueError, match="layout"):
        state_of(samples, "ome04", layout="sideways")


def test_local_sources_need_a_url(samples, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # an empty registry: no server runs
    with pytest.raises(ValueError, match=f"start one with `ngserve serve {samples['ome04'].parent}`"):
        ngstate.link(samples["ome04"])


def test_parse_url_forms(samples, start_server):
    _, s = state_of(samples, "ome04")
    plain = VIEWER + ngstate.encode_fragment(s)
    assert ngstate.parse_url(plain) == s
    assert ngstate.parse_url(VIEWER + "#!+" + json.dumps({"layout": "3d"})) == {"layout": "3d"}
    from neuroglancer.url_state import json_to_url_safe

    legacy = VIEWER + "#!" + json_to_url_safe(json.dumps(s, separators=(",", ":")))
    assert ngstate.parse_url(legacy) == s
    srv = start_server("serve", str(samples["ome04"].parent), "--data-dir", str(samples["ome04"].parent / "_db"))
    short = ngstate.shorten(s, srv.url)
    assert short.startswith(srv.url + "/-/viewer/v/ngserve/#!" + srv.url + "/-/api/states/")
    assert ngstate.parse_url(short) == s
    with pytest.raises(ValueError):
        ngstate.parse_url(VIEWER + "#!not json at all")


@pytest.mark.parametrize("fragment", ["#!" + "[" * 100000, "#!" + "%7B%22a%22:" * 50000, "#!" + "{'a':" * 50000],
                         ids=["json", "percent-encoded", "legacy-url-safe"])
def test_parse_url_refuses_deeply_nested_state_with_a_value_error(fragment):
    """json's RecursionError once escaped parse_url, which promises ValueError for a URL without a state."""
    with pytest.raises(ValueError, match="nested too deeply"):
        ngstate.parse_url(VIEWER + fragment)


def test_parse_url_refuses_a_deeply_nested_state_file_with_a_value_error(tmp_path, start_server):
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    srv = start_server("serve", str(tmp_path), "--data-dir", str(tmp_path / "_db"))
    with pytest.raises(ValueError, match="nested too deeply"):
        ngstate.parse_url(f"{VIEWER}#!{srv.url}/deep.json")


def test_default_viewer_is_ngserves_own_when_it_serves_the_data(samples, start_server):
    srv = start_server("serve", str(samples["ome04"].parent))
    url = ngstate.link(f"{srv.url}/cells.ome.zarr", f"{srv.url}/pc_seg", labels=False)
    assert url.startswith(srv.url + "/-/viewer/v/ngserve/#!")
    s = ngstate.parse_url(url)
    assert [l["type"] for l in s["layers"]] == ["image", "segmentation"]
    # A plain static file server is not ngserve: the public demo viewer is used.
    static = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1",
                               "--directory", str(samples["ome04"].parent)], stdout=subprocess.PIPE, text=True)
    try:
        line = static.stdout.readline()
        port = int(line.split("port ")[1].split(" ")[0])
        other = ngstate.link(f"http://127.0.0.1:{port}/cells.ome.zarr")
        assert other.startswith(ngstate.DEMO_VIEWER + "#!")
    finally:
        static.terminate()
        static.wait()


def test_a_server_started_after_a_first_no_is_found(tmp_path, start_server):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    origin = f"http://127.0.0.1:{port}"
    assert not ngstate.is_ngserve(origin)  # nothing listens yet
    start_server("serve", str(tmp_path), "--port", str(port))
    assert ngstate.is_ngserve(origin)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "server", *args], capture_output=True, text=True, timeout=120)


def test_cli_link_json_url_and_batch(samples, tmp_path):
    folder = str(samples["ome04"].parent)
    r = _cli("link", str(samples["ome04"]), str(samples["ome04_labels"]), "--served-at", f"{folder}={BASE}",
             "--viewer", VIEWER, "--json", "--segments", "1,2")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert [l["type"] for l in s["layers"]] == ["image", "segmentation"] and s["layers"][1]["segments"] == ["1", "2"]
    assert r.stdout.startswith("{\n  ")  # pretty
    r = _cli("link", str(samples["ome04"]), "--served-at", f"{folder}={BASE}", "--viewer", VIEWER)
    url = r.stdout.strip()
    assert url == neuroglancer.to_url(neuroglancer.ViewerState(ngstate.parse_url(url)), prefix=VIEWER)
    table = tmp_path / "t.csv"
    table.write_text(f"id,source,source2\na,{samples['ome04']},{samples['ome04_labels']}\nb,{samples['pc_image']},\n")
    r = _cli("link", "--batch", str(table), "--served-at", f"{folder}={BASE}", "--viewer", VIEWER, "--layout", "xy")
    assert r.returncode == 0, r.stderr
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["id"] for row in rows] == ["a", "b"]
    states = [ngstate.parse_url(row["url"]) for row in rows]
    assert [len(st["layers"]) for st in states] == [2, 1]
    assert all(st["layout"] == "xy" for st in states)


def test_cli_link_segments_are_exact_uint64(samples):
    folder = str(samples["ome04"].parent)
    common = [str(samples["ome04_labels"]), "--served-at", f"{folder}={BASE}", "--viewer", VIEWER, "--json"]
    r = _cli("link", *common, "--segments", "18446744073709551615,7")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["layers"][0]["segments"] == ["18446744073709551615", "7"]
    for bad in ("1.5", "18446744073709551616", "-1", "seven"):
        r = _cli("link", *common, f"--segments={bad}")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and bad in r.stderr, r.stderr


def test_cli_link_hidden_names_only_unknown_layers_and_short_excludes_json(samples):
    common = [str(samples["ome04"]), str(samples["ome04_labels"]), "--served-at",
              f"{samples['ome04'].parent}={BASE}", "--viewer", VIEWER]
    r = _cli("link", *common, "--hidden", "nuclei", "--hidden", "ghost")
    assert r.returncode == 2 and "--hidden ghost: no layer of that name" in r.stderr, r.stderr
    r = _cli("link", *common, "--json", "--short", "http://127.0.0.1:9")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not allowed with" in r.stderr, r.stderr


def test_cli_link_batch_shows_progress_on_a_terminal_only(samples, tmp_path):
    import fcntl
    import os
    import pty
    import struct
    import termios

    table = tmp_path / "t.csv"
    table.write_text(f"source\n{samples['ome04']}\n{samples['pc_image']}\n")
    args = [sys.executable, "-m", "server", "link", "--batch", str(table),
            "--served-at", f"{samples['ome04'].parent}={BASE}", "--viewer", VIEWER]
    piped = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # a new pty is 0 columns wide
    try:
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=slave, timeout=120)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert r.returncode == 0 and r.stdout.decode().count("\n") == 3  # header and two rows, bar kept off stdout
    assert b"links: " in seen and b"/2 [" in seen


def test_cli_link_on_a_labels_group_shows_its_label_images(samples):
    folder = str(samples["ome04"].parent)
    r = _cli("link", str(samples["ome04"] / "labels"), "--served-at", f"{folder}={BASE}", "--viewer", VIEWER, "--json")
    assert r.returncode == 0, r.stderr
    want = ngstate.build_state([samples["ome04_labels"]], served_at={folder: BASE}, viewer=VIEWER).to_json()
    assert json.loads(r.stdout) == want  # one segmentation layer per label image (here: nuclei)


def test_cli_link_errors_are_one_line(samples, tmp_path):
    (tmp_path / "x.txt").write_text("x")
    for args in (["link", str(tmp_path)], ["link", str(samples["ome04"])], ["link"],
                 ["link", "http://127.0.0.1:9/absent.zarr"], ["link", str(samples["ome04"]), "--kind", "image",
                                                               "--kind", "image"],
                 ["link", str(samples["ome04"]), "--served-at", "nonsense"]):
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


def test_open_endpoint_redirects_to_the_built_state(samples, start_server):
    folder = samples["ome04"].parent
    srv = start_server("serve", "--mount", f"em={folder}")
    req = urllib.request.Request(f"{srv.url}/-/open/em/cells.ome.zarr/labels/nuclei")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(req)
    assert err.value.code == 302
    location = err.value.headers["Location"]
    assert location.startswith("/-/viewer/v/ngserve/#!")
    s = ngstate.parse_url(location)
    expected = ngstate.build_state([samples["ome04_labels"]], served_at={str(folder): srv.url + "/em"}).to_json()
    assert s == expected
    assert s["layers"][0]["type"] == "segmentation"
    assert s["layers"][0]["source"] == [f"zarr2://{srv.url}/em/cells.ome.zarr/labels/nuclei/",
                                        f"precomputed://{srv.url}/-/mesh/em/cells.ome.zarr/labels/nuclei"]
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(f"{srv.url}/-/open/em/nothing-here")
    assert err.value.code == 404


def test_repr_html_is_a_clickable_link(samples):
    st, _ = state_of(samples, "ome04")
    html = st._repr_html_()
    assert html.startswith('<a href="https://viewer.example/#!') and "cells</a>" in html
    assert "&quot;" not in html.split('"')[1]  # the URL is percent-encoded, safe in an attribute


def test_time_axis_starts_at_the_first_sample(tmp_path):
    import numpy as np

    from volumes.write import write_ome_zarr

    data = np.zeros((3, 2, 8, 10, 12), np.uint16)
    data[:, :, 2:6, 3:7, 4:8] = 500
    write_ome_zarr(tmp_path / "tc.ome.zarr", data, axes=("t", "c", "z", "y", "x"), voxel_size=(1, 1, 2, 1, 1), levels=1)
    st = ngstate.build_state([tmp_path / "tc.ome.zarr"], served_at={str(tmp_path): BASE}, viewer=VIEWER)
    s = st.to_json()
    assert list(s["dimensions"]) == ["x", "y", "z", "t"] and s["dimensions"]["t"] == [1.0, ""]
    assert s["position"] == [5.5, 4.5, 3.5, 0.0]  # OME centres: sample 0 of t is centred on 0
    assert s["layers"][0]["localDimensions"] == {"c'": [1.0, ""]}
    assert_round_trips(s)


def test_ome_image_alone_brings_its_labels(samples):
    folder = str(samples["ome04"].parent)
    layers = ngstate.build_state([samples["ome04"]], served_at={folder: BASE}).to_json()["layers"]
    names = [n for n in ("nuclei", "cells") if (samples["ome04"] / "labels" / n).exists()]
    assert [(l["type"], l["source"]) for l in layers] == [("image", f"zarr2://{BASE}/cells.ome.zarr/")] + [
        ("segmentation", f"zarr2://{BASE}/cells.ome.zarr/labels/{n}/") for n in
        json.loads((samples["ome04"] / "labels" / ".zattrs").read_text())["labels"]]
    assert names and len(layers) == 1 + len(names)
    # Turned off, or not alone (a label image given too; by its URL: test_cli_polish's --short): none added.
    off = ngstate.build_state([samples["ome04"]], served_at={folder: BASE}, labels=False).to_json()["layers"]
    assert len(off) == 1
    given = ngstate.build_state([samples["ome04"], samples["ome04"] / "labels" / names[0]],
                                served_at={folder: BASE}, labels=True)
    assert [p.layer["source"] for p in given.plans] == [f"zarr2://{BASE}/cells.ome.zarr/",
                                                         f"zarr2://{BASE}/cells.ome.zarr/labels/{names[0]}/"]
