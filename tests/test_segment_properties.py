"""Segment properties: the presenter (OME image-label, tables) against the precomputed spec."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annotations.files import read_table
from volumes import SourceError
from volumes.segment_properties import colors_of, from_frame, from_image_label, image_label_of

NUMBER_TYPES = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32"}


def check_spec(info: dict) -> None:
    """The shape segment_properties.md asks for (the neuroglancer package has no reader for it)."""
    assert info["@type"] == "neuroglancer_segment_properties"
    inline = info["inline"]
    ids = inline["ids"]
    assert all(isinstance(i, str) and i.isdigit() and int(i) < 2**64 for i in ids)
    kinds = [p["type"] for p in inline["properties"]]
    for once in ("label", "description", "tags"):
        assert kinds.count(once) <= 1
    for p in inline["properties"]:
        assert isinstance(p["id"], str) and len(p["values"]) == len(ids)
        if p["type"] in ("label", "description", "string"):
            assert all(isinstance(v, str) for v in p["values"])
        elif p["type"] == "number":
            assert p["data_type"] in NUMBER_TYPES
            assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p["values"])
        else:
            assert p["type"] == "tags" and "description" not in p
            assert all(isinstance(t, str) and t and " " not in t and not t.startswith("#") for t in p["tags"])
            assert len({t.lower() for t in p["tags"]}) == len(p["tags"])  # the client matches them case-insensitively
            for v in p["values"]:
                assert v == sorted(set(v)) and all(0 <= k < len(p["tags"]) for k in v)
    json.dumps(info, allow_nan=False)


def by_type(info: dict) -> dict:
    return {p["type"] if p["type"] != "number" else p["id"]: p for p in info["inline"]["properties"]}


OME_LABEL = {
    "version": "0.4",
    "properties": [
        {"label-value": 1, "name": "nucleus", "class": "organelle", "area": 120, "score": 0.5},
        {"label-value": 2, "name": "mito", "class": "Organelle", "area": 30, "score": 0.25, "dividing": True},
        {"label-value": 2**64 - 1, "name": "big id", "description": "a long text", "area": 3, "class": "# "},
    ],
    "colors": [{"label-value": 1, "rgba": [255, 0, 16, 255]}, {"label-value": 2, "rgba": [0, 128, 0, 128]}],
}


def test_ome_properties_become_label_tags_and_numbers():
    info = from_image_label(OME_LABEL)
    check_spec(info)
    assert info["inline"]["ids"] == ["1", "2", str(2**64 - 1)]
    props = by_type(info)
    assert props["label"]["values"] == ["nucleus", "mito", "big id"]
    assert props["description"]["values"] == ["", "", "a long text"]
    assert props["area"] == {"id": "area", "type": "number", "data_type": "int32", "values": [120, 30, 3]}
    assert props["score"]["data_type"] == "float32" and props["score"]["values"] == [0.5, 0.25, 0]
    tags = props["tags"]
    assert [[tags["tags"][k] for k in v] for v in tags["values"]] == [["organelle"], ["dividing", "organelle"], []]


def test_ome_colors_become_segment_colors():
    assert colors_of(OME_LABEL) == {"1": "#ff0010", "2": "#008000"}
    assert colors_of({}) == {}


def test_ome_0_5_image_label_sits_under_ome():
    assert image_label_of({"ome": {"version": "0.5", "image-label": OME_LABEL}}) is OME_LABEL
    assert image_label_of({"image-label": OME_LABEL}) is OME_LABEL
    assert image_label_of({"multiscales": []}) is None


@pytest.mark.parametrize(
    "label, message",
    [
        ({"properties": [{"label-value": -1}]}, "label-value -1 is not a segment id"),
        ({"properties": [{"label-value": 1}, {"label-value": 1}]}, "segment 1 is listed twice"),
        ({"properties": [{"label-value": 1, "x": 1}, {"label-value": 2, "x": "a"}]}, "'x' mixes numbers and text"),
        ({"properties": {"1": "a"}}, "properties must be a list of objects"),
        ({"properties": [{"label-value": 1, "x": float("inf")}]}, "'x' has inf, which a float32 property cannot hold"),
        ({"properties": [{"label-value": 1, "name": 3}]}, "'name' must be text"),
    ],
)
def test_bad_ome_properties_say_what_is_wrong(label, message):
    with pytest.raises(SourceError, match=message):
        from_image_label(label)


def test_bad_colors_say_what_is_wrong():
    with pytest.raises(SourceError, match="rgba of segment 3"):
        colors_of({"colors": [{"label-value": 3, "rgba": [0, 300, 0]}]})


def test_no_properties_no_info():
    assert from_image_label({"version": "0.4", "colors": []}) is None
    assert from_image_label({"properties": []}) is None


def test_table_with_exact_uint64_ids(tmp_path):
    big = 2**64 - 2  # past float64 and int64: the table reader must keep it exact
    path = tmp_path / "cells.csv"
    path.write_text(f"id,name,cell_type,volume\n{big},alpha,pyramidal cell,1.5\n7,beta,,2\n")
    frame = read_table(path, ["id", "name", "cell_type", "volume"], exact=["id"])
    info = from_frame(frame, where=str(path))
    check_spec(info)
    assert info["inline"]["ids"] == [str(big), "7"]
    props = by_type(info)
    assert props["label"]["values"] == ["alpha", "beta"]
    assert props["volume"]["data_type"] == "float32"
    assert props["tags"]["tags"] == ["pyramidal_cell"] and props["tags"]["values"] == [[0], []]


def test_table_parquet_and_label_column(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"id": [3, 4], "title": ["c", "d"], "n": [1, 2]}).to_parquet(path)
    info = from_frame(read_table(path, ["id", "title", "n"], exact=["id"]), label="title")
    check_spec(info)
    assert by_type(info)["label"]["values"] == ["c", "d"]
    with pytest.raises(SourceError, match="no column 'id'"):
        from_frame(pd.DataFrame({"segment": [1]}), where="t.csv")
    with pytest.raises(SourceError, match=r"t.csv: segment '1.5' is not a segment id"):
        from_frame(pd.DataFrame({"segment": ["1.5"]}), "segment", where="t.csv")


_value = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
    st.text(alphabet="# a\t", max_size=4),
    st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_entry = st.dictionaries(st.sampled_from(["name", "label", "description", "kind", "size", "flag"]), _value, max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1) | st.integers(-5, 2**64 + 5) | st.text(max_size=3), _entry),
                max_size=6, unique_by=lambda t: t[0]))
def test_any_properties_give_valid_json_or_one_line(entries):
    label = {"properties": [{"label-value": v, **e} for v, e in entries]}
    try:
        info = from_image_label(label)
    except SourceError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    if info is not None:
        check_spec(info)


# -- served and attached ----------------------------------------------------------------

def write_labelled(root, zarr_version: int = 2, image_label: dict | None = OME_LABEL):
    """An OME image with labels/cells whose image-label has ``image_label``'s properties/colors."""
    import numpy as np

    from volumes import add_labels_group, blobs, write_ome_zarr

    image, labels = blobs((8, 40, 48), n_blobs=4, seed=3)
    path = root / "img.ome.zarr"
    write_ome_zarr(path, (image * 1000).astype(np.uint16), levels=1, zarr_version=zarr_version)
    cells = add_labels_group(path, ["cells"], zarr_version) / "cells"
    write_ome_zarr(cells, labels.astype(np.uint32), levels=1, method="mode", label=True, zarr_version=zarr_version)
    if image_label:
        meta_file = cells / (".zattrs" if zarr_version == 2 else "zarr.json")
        meta = json.loads(meta_file.read_text())
        attrs = meta if zarr_version == 2 else meta["attributes"]["ome"]
        attrs["image-label"].update({k: image_label[k] for k in ("properties", "colors") if k in image_label})
        meta_file.write_text(json.dumps(meta))
    return path, cells, labels


@pytest.mark.parametrize("zarr_version", [2, 3])
def test_served_info_and_state(tmp_path, start_server, zarr_version):
    import neuroglancer

    import ngstate
    from http_get import get

    path, cells, _ = write_labelled(tmp_path, zarr_version)
    srv = start_server("serve", str(tmp_path))
    url = f"{srv.url}/-/segment_properties/img.ome.zarr/labels/cells"
    status, headers, body = get(url + "/info")
    assert status == 200, body
    info = json.loads(body)
    assert info == from_image_label(OME_LABEL)
    check_spec(info)
    assert get(url + "/info", {"If-None-Match": headers["ETag"]})[0] == 304
    # the same files, the same answer; another label image or no properties: 404
    assert get(f"{srv.url}/-/segment_properties/img.ome.zarr/info")[0] == 404
    assert get(f"{srv.url}/-/segment_properties/img.ome.zarr/labels/cells/")[0] == 404

    state = ngstate.build_state([cells], served_at={str(tmp_path): srv.url}).to_json()
    layer = state["layers"][0]
    assert layer["type"] == "segmentation"
    scheme = "zarr2" if zarr_version == 2 else "zarr3"
    assert layer["source"] == [f"{scheme}://{srv.url}/img.ome.zarr/labels/cells/", f"precomputed://{url}",
                               f"precomputed://{srv.url}/-/mesh/img.ome.zarr/labels/cells"]
    assert layer["segmentColors"] == {"1": "#ff0010", "2": "#008000"}
    assert neuroglancer.ViewerState(state).to_json()["layers"][0]["source"] == layer["source"]


def test_bad_properties_answer_one_line(tmp_path, start_server):
    from http_get import get

    write_labelled(tmp_path, image_label={"properties": [{"label-value": "one", "name": "x"}]})
    srv = start_server("serve", str(tmp_path))
    status, _, body = get(f"{srv.url}/-/segment_properties/img.ome.zarr/labels/cells/info")
    assert status == 422
    assert body.decode().count("\n") == 1 and "label-value 'one' is not a segment id" in body.decode()


def test_no_properties_no_extra_source(tmp_path, start_server):
    import ngstate

    _, cells, _ = write_labelled(tmp_path, image_label=None)
    srv = start_server("serve", str(tmp_path))
    layer = ngstate.build_state([cells], served_at={str(tmp_path): srv.url}).to_json()["layers"][0]
    mesh = f"precomputed://{srv.url}/-/mesh/img.ome.zarr/labels/cells"  # the only other source: meshes
    assert layer["source"] == [f"zarr2://{srv.url}/img.ome.zarr/labels/cells/", mesh] and "segmentColors" not in layer
    # colors alone: colors, and still no properties source
    _, cells, _ = write_labelled(tmp_path / "c", image_label={"colors": OME_LABEL["colors"]})
    layer = ngstate.build_state([cells], served_at={str(tmp_path): srv.url}).to_json()["layers"][0]
    assert layer["source"] == [f"zarr2://{srv.url}/c/img.ome.zarr/labels/cells/",
                               f"precomputed://{srv.url}/-/mesh/c/img.ome.zarr/labels/cells"]
    assert layer["segmentColors"] == {"1": "#ff0010", "2": "#008000"}



def test_segment_table_from_python_and_cli(tmp_path, start_server):
    import subprocess
    import sys

    import ngstate
    from http_get import get

    _, cells, _ = write_labelled(tmp_path)  # OME names too: the table's win, the OME colors stay
    table = tmp_path / "cells.csv"
    table.write_text("id,name,kind\n1,first cell,round\n2,second cell,long\n")
    srv = start_server("serve", str(tmp_path))
    layer = ngstate.build_state([cells], served_at={str(tmp_path): srv.url}, segment_table=table).to_json()["layers"][0]
    props_url = f"{srv.url}/cells.csv.segment_properties"
    assert layer["source"][1:] == [f"precomputed://{props_url}", f"precomputed://{srv.url}/-/mesh/img.ome.zarr/labels/cells"]
    assert layer["segmentColors"] == {"1": "#ff0010", "2": "#008000"}
    status, _, body = get(props_url + "/info")
    assert status == 200
    info = json.loads(body)
    check_spec(info)
    assert by_type(info)["label"]["values"] == ["first cell", "second cell"]

    table.write_text("id,name\n1,renamed\n")  # the link rewrites the folder: it follows the table
    out = subprocess.run([sys.executable, "-m", "server", "link", str(cells), "--json", "--segment-table", str(table),
                          "--served-at", f"{tmp_path}={srv.url}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["layers"][0]["source"][1] == f"precomputed://{props_url}"
    assert by_type(json.loads(get(props_url + "/info")[2]))["label"]["values"] == ["renamed"]
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]

    elsewhere = tmp_path.parent / f"{tmp_path.name}-other.csv"
    elsewhere.write_text("id,name\n1,a\n")
    bad = subprocess.run([sys.executable, "-m", "server", "link", str(cells), "--json", "--segment-table", str(elsewhere),
                          "--served-at", f"{tmp_path}={srv.url}"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "must sit in a folder an ngserve serves" in bad.stderr
    assert not (tmp_path.parent / f"{elsewhere.name}.segment_properties").exists()
    table.write_text("segment,name\n1,a\n")
    bad = subprocess.run([sys.executable, "-m", "server", "link", str(cells), "--json", "--segment-table", str(table),
                          "--served-at", f"{tmp_path}={srv.url}"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no column 'id'" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_open_attaches_names_and_colors(tmp_path, start_server):
    from test_open import get as get_no_redirect

    import ngstate

    write_labelled(tmp_path)
    srv = start_server("serve", str(tmp_path))
    status, headers, _ = get_no_redirect(f"{srv.url}/-/open/img.ome.zarr")
    assert status == 302
    layers = {l["name"]: l for l in ngstate.parse_url(headers["Location"])["layers"]}
    assert layers["cells"]["source"][1] == f"precomputed://{srv.url}/-/segment_properties/img.ome.zarr/labels/cells"
    assert layers["cells"]["segmentColors"] == {"1": "#ff0010", "2": "#008000"}
    assert isinstance(layers["img"]["source"], str)


def test_inspect_counts_properties_and_colors(tmp_path):
    from volumes import open_dataset

    _, cells, _ = write_labelled(tmp_path)
    summary = open_dataset(cells).to_json()
    assert summary["segment_properties"] == {"properties": 3, "colors": 2}
    assert "_image_label" not in summary
