"""volumes: detection and metadata of every format, from disk and over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from volumes import SourceError, open_dataset
from volumes.samples import SHAPE, write_samples
from volumes.stats import contrast_range, stats_level


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return write_samples(tmp_path_factory.mktemp("samples"))


def axes(ds):
    return [(a.name, a.unit, pytest.approx(a.scale, rel=1e-12)) for a in ds.axes]


def test_ome_04_image_levels_units_offset(samples):
    ds = open_dataset(samples["ome04"])
    assert (ds.format, ds.version, ds.scheme) == ("ome-zarr", "0.4", "zarr2")
    assert axes(ds) == [("z", "m", 0.5e-6), ("y", "m", 0.25e-6), ("x", "m", 0.2e-6)]
    # translation (2, 1, 3) µm names the centre of voxel 0; Neuroglancer's origin is its corner.
    assert ds.offset == pytest.approx([2.0 / 0.5 - 0.5, 1.0 / 0.25 - 0.5, 3.0 / 0.2 - 0.5])
    assert [lv.shape for lv in ds.levels] == [[20, 45, 70], [10, 23, 35], [5, 12, 18]]
    assert [lv.factors for lv in ds.levels] == [[1, 1, 1], [2, 2, 2], [4, 4, 4]]
    assert ds.levels[0].chunks == [16, 32, 32] and ds.dtype == "uint16"
    assert ds.extras["labels"] == ["nuclei"]
    assert ds.kind_hint is None and ds.windows == []


def test_ome_labels_are_segmentations(samples):
    ds = open_dataset(samples["ome04_labels"])
    assert ds.kind_hint == "segmentation" and ds.dtype == "uint32"


def test_ome_05_channels_and_omero(samples):
    ds = open_dataset(samples["ome05"])
    assert (ds.format, ds.version, ds.scheme) == ("ome-zarr", "0.5", "zarr3")
    assert axes(ds) == [("c'", "", 1.0), ("z", "m", 1e-6), ("y", "m", 0.4e-6), ("x", "m", 0.4e-6)]
    assert ds.axes[0].type == "channel"
    assert ds.windows == [(1000, 1300), (50, 700)]
    assert [lv.shape for lv in ds.levels] == [[2, *SHAPE], [2, 10, 23, 35]]


def test_plain_zarr_names_follow_neuroglancer(samples):
    v2 = open_dataset(samples["zarr2"])
    assert (v2.format, v2.dtype) == ("zarr2", "float32")
    assert axes(v2) == [("d0", "", 1.0), ("d1", "", 1.0), ("d2", "", 1.0)]
    v3 = open_dataset(samples["zarr3_seg"])
    assert (v3.format, v3.dtype) == ("zarr3", "uint32")
    assert [a.name for a in v3.axes] == ["z", "y", "x"]
    assert open_dataset(samples["zarr2_u64"]).dtype == "uint64"


def test_n5_neuroglancer_convention(samples):
    ds = open_dataset(samples["n5_ng"])
    assert ds.extras["convention"] == "neuroglancer"
    assert axes(ds) == [("x", "m", 4e-9), ("y", "m", 4e-9), ("z", "m", 40e-9)]
    assert ds.native_axes == ds.axes and ds.offset == [0, 0, 0] and ds.ng_path == ""
    assert [lv.shape for lv in ds.levels] == [[70, 45, 20], [35, 23, 10]]
    assert ds.levels[1].factors == [2, 2, 2]


def test_n5_viewer_convention(samples):
    ds = open_dataset(samples["n5_viewer"])
    assert ds.extras["convention"] == "n5-viewer"
    assert axes(ds) == [("x", "m", 8e-9), ("y", "m", 8e-9), ("z", "m", 30e-9)]
    # The group itself states nothing Neuroglancer reads its rank from ("Unable to determine rank
    # of dataset" in the client), so the layer opens s0, whose pixelResolution it reads.
    assert [a.scale for a in ds.native_axes] == pytest.approx([8e-9, 8e-9, 30e-9])
    assert ds.ng_path == "s0" and len(ds.levels) == 1 and ds.notes


def test_n5_cosem_convention(samples):
    ds = open_dataset(samples["n5_cosem"])
    assert ds.extras["convention"] == "cosem"
    assert axes(ds) == [("x", "m", 4e-9), ("y", "m", 4e-9), ("z", "m", 4e-9)]
    # translate (100, 200, 300) nm is the centre of voxel 0
    assert ds.offset == pytest.approx([100 / 4 - 0.5, 200 / 4 - 0.5, 300 / 4 - 0.5])
    assert ds.ng_path == "s0" and ds.notes  # Neuroglancer cannot read COSEM's level factors


def test_precomputed_image_and_sharded_segmentation(samples):
    img = open_dataset(samples["pc_image"])
    assert (img.format, img.kind_hint, img.dtype) == ("precomputed", "image", "uint16")
    assert axes(img) == [("x", "m", 8e-9), ("y", "m", 8e-9), ("z", "m", 40e-9)]
    assert img.offset == [10, 20, 5] and img.levels[0].shape == [70, 45, 20]
    seg = open_dataset(samples["pc_seg"])
    assert (seg.kind_hint, seg.dtype) == ("segmentation", "uint64")
    assert seg.levels[0].encoding == "compressed_segmentation sharded"
    assert seg.extras["mesh"] == "mesh"
    data = np.asarray(seg.open_level(0).read().result())
    assert data.shape == (70, 45, 20, 1) and data.max() > 0


def test_precomputed_annotations(samples):
    ds = open_dataset(samples["points"])
    assert (ds.format, ds.kind_hint) == ("precomputed-annotations", "annotation")
    assert ds.extras["relationships"] == ["cell"] and ds.extras["properties"] == ["score"]
    assert ds.extras["annotation_type"] == "point"
    assert axes(ds) == [("x", "m", 8e-9), ("y", "m", 8e-9), ("z", "m", 40e-9)]


def test_contrast_reads_the_coarsest_level_with_enough_voxels(samples):
    ds = open_dataset(samples["ome04"])
    assert stats_level(ds, target=10 * 23 * 35) == 1
    assert stats_level(ds, target=10**9) == 0
    lo, hi = contrast_range(ds)
    assert 1000 <= lo < hi <= 1400  # the narrow uint16 range, not 0..65535
    flo, fhi = contrast_range(open_dataset(samples["zarr2"]))
    assert -1.0 <= flo < fhi <= 2.0 and isinstance(flo, float)


def test_single_level_contrast_reads_a_bounded_sample_of_whole_chunks(tmp_path, start_server):
    from volumes.stats import MAX_SAMPLE_CHUNKS
    from volumes.write import write_precomputed, write_zarr_array

    # 512 chunks each; values rise along z, so a sample spread over the volume spans most of the range.
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None, None], (256, 256, 256))
    write_zarr_array(tmp_path / "big.zarr", np.ascontiguousarray(ramp), chunks=(32, 32, 32))
    # precomputed: a channel dimension the axes do not list, and chunks aligned to a voxel offset
    write_precomputed(tmp_path / "pc", np.ascontiguousarray(ramp[::2, ::2, ::2]), resolution_xyz=(8, 8, 8),
                      voxel_offset_xyz=(5, 6, 7), levels=1, chunk=16)
    srv = start_server("serve", str(tmp_path))
    lo, hi = contrast_range(open_dataset(srv.url + "/big.zarr"))
    assert lo <= 40 and hi >= 215
    assert 8 <= len(srv.requested(r"GET /big\.zarr/\d+/\d+/\d+ ")) <= MAX_SAMPLE_CHUNKS
    lo, hi = contrast_range(open_dataset("precomputed://" + srv.url + "/pc"))
    assert lo <= 40 and hi >= 215
    assert 8 <= len(srv.requested(r"GET /pc/8_8_8/\d+-\d+_")) <= MAX_SAMPLE_CHUNKS
    flat = np.full((8, 8, 8), 5, np.uint8)
    write_zarr_array(tmp_path / "flat.zarr", flat)
    assert contrast_range(open_dataset(tmp_path / "flat.zarr")) == [5, 6]  # never an empty range


def test_a_failing_write_leaves_nothing_that_looks_valid(tmp_path):
    from volumes.write import write_n5, write_ome_zarr

    data = np.ones((8, 8, 8), np.uint16)
    with pytest.raises(ValueError, match="unknown N5 convention"):  # raised after the levels were written
        write_n5(tmp_path / "a.n5", data, convention="bogus", voxel_size_xyz=(1, 1, 1))
    assert list(tmp_path.iterdir()) == []
    write_ome_zarr(tmp_path / "img.ome.zarr", data, levels=1)
    with pytest.raises(ValueError):  # a malformed omero window fails after the arrays were written
        write_ome_zarr(tmp_path / "img.ome.zarr", data * 2, levels=2, windows=[(1,)])
    assert [p.name for p in tmp_path.iterdir()] == ["img.ome.zarr"]
    assert len(open_dataset(tmp_path / "img.ome.zarr").levels) == 1  # the earlier dataset, intact


def test_reads_over_http_from_ngserve(samples, start_server):
    srv = start_server("serve", str(samples["ome04"].parent))
    ds = open_dataset(srv.url + "/cells.ome.zarr")
    assert ds.location.is_http and ds.levels[2].shape == [5, 12, 18]
    assert 1000 <= contrast_range(ds, target=10 * 23 * 35)[0]
    # Statistics read only the chosen level's chunks.
    srv.settle()  # the log lines of the reads above may still be on their way
    assert srv.requested(r"GET /cells.ome.zarr/1/\d")
    assert not srv.requested(r"GET /cells.ome.zarr/[02]/\d")
    pc = open_dataset("precomputed://" + srv.url + "/pc_seg")
    assert pc.levels[0].shape == [70, 45, 20]


def test_unknown_and_missing_sources_name_what_was_found(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SourceError, match=r"found only notes.txt"):
        open_dataset(tmp_path)
    with pytest.raises(SourceError, match="no such file"):
        open_dataset(tmp_path / "absent.zarr")
    (tmp_path / "grp").mkdir()
    (tmp_path / "grp" / ".zgroup").write_text('{"zarr_format": 2}')
    with pytest.raises(SourceError, match="zarr v2 group that is neither an OME multiscale image nor a labels group"):
        open_dataset(tmp_path / "grp")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "server", *args], capture_output=True, text=True, timeout=120)


def test_inspect_prints_json(samples):
    r = _cli("inspect", str(samples["ome04"]))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["format"] == "ome-zarr" and out["layer_kind"] == "image"
    assert out["levels"][0]["voxel_size"] == pytest.approx([0.5e-6, 0.25e-6, 0.2e-6])
    assert out["levels"][0]["units"] == ["m", "m", "m"]
    assert out["offset"] == pytest.approx([2e-6, 1e-6, 3e-6])
    assert out["levels"][1]["offset"] == pytest.approx([2.25e-6, 1.125e-6, 3.1e-6])
    assert 1000 <= out["contrast"][0] < out["contrast"][1] <= 1400
    seg = json.loads(_cli("inspect", str(samples["zarr2_u64"])).stdout)
    assert seg["layer_kind"] == "segmentation" and "contrast" not in seg


def test_inspect_names_a_metadata_error_as_such(samples, tmp_path):
    import shutil

    bad = shutil.copytree(samples["points"], tmp_path / "points")
    info = json.loads((bad / "info").read_text())
    info["dimensions"]["x"] = [8, "furlong"]
    (bad / "info").write_text(json.dumps(info))
    r = _cli("inspect", str(bad))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "unknown unit 'furlong'" in r.stderr and "array data" not in r.stderr


def test_inspect_errors_are_one_line_exit_2(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    r = _cli("inspect", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "found only a.txt" in r.stderr and "Traceback" not in r.stderr


def _zarr_array(path, data: np.ndarray, dtype: str) -> None:
    import tensorstore as ts

    store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)}},
                    create=True, dtype=dtype, shape=data.shape, chunk_layout=ts.ChunkLayout(chunk_shape=[8, 8, 8])).result()
    store.write(data.astype(store.dtype.numpy_dtype)).result()


@pytest.mark.parametrize("dtype", ["bool", "complex64", "complex128", "bfloat16", "float16", "int8"])
def test_contrast_of_any_dtype_is_a_range_not_an_exception(tmp_path, dtype):
    """np.percentile refuses bool and complex; inspect and link once crashed on such arrays."""
    rng = np.random.default_rng(0)
    values = rng.normal(50, 10, (12, 20, 16))
    data = {"bool": values > 50, "complex64": values * (0.6 + 0.8j), "complex128": values * (0.6 + 0.8j)}.get(dtype, values)
    _zarr_array(tmp_path / "a.zarr", data, dtype)
    lo, hi = contrast_range(open_dataset(tmp_path / "a.zarr"))
    assert lo < hi
    if dtype == "bool":
        assert [lo, hi] == [0, 1]
    else:  # complex: the magnitude's percentiles (|values * (0.6+0.8j)| == values)
        assert lo == pytest.approx(np.percentile(values, 0.5), abs=1.0) and hi == pytest.approx(np.percentile(values, 99.5), abs=1.0)


@pytest.mark.parametrize("dtype", ["bool", "complex64"])
def test_inspect_and_link_on_bool_or_complex_arrays_do_not_crash(tmp_path, dtype):
    data = np.arange(12 * 20 * 16).reshape(12, 20, 16) % 3 == 0
    _zarr_array(tmp_path / "a.zarr", data if dtype == "bool" else data * (1 + 1j), dtype)
    for args in (["inspect", str(tmp_path / "a.zarr")],
                 ["link", str(tmp_path / "a.zarr"), "--json", "--served-at", f"{tmp_path}=http://127.0.0.1:1"]):
        r = _cli(*args)
        assert "Traceback" not in r.stderr, r.stderr
        # 0: shown; 2: refused in one line, naming the source (the client cannot show every dtype)
        assert r.returncode in (0, 2) and r.stderr.count("\n") <= 1, r.stderr


def test_contrast_of_values_without_numbers_is_the_default_window():
    from volumes.stats import _percentiles

    for data in (np.array(["b", "a"]), np.array([b"x"]), np.zeros(3, [("a", "u1"), ("b", "f4")]), np.array([{}], object)):
        assert _percentiles(data, 0.5, 99.5) == [0.0, 1.0]


@pytest.mark.parametrize("dtype", ["uint64", "int64", "uint8", "int8"])
def test_contrast_stays_within_the_dtype(dtype):
    """float64 percentiles round 2**64 - 1024 up to 2**64; the window once went past uint64's top."""
    from volumes.stats import _percentiles

    info = np.iinfo(dtype)
    for value in (info.max, max(int(info.min), int(info.max) - 1024), info.min):
        lo, hi = _percentiles(np.array([value], dtype), 0.5, 99.5)
        assert info.min <= lo < hi <= info.max


@pytest.mark.parametrize("values", [[-1.7e308, 1.7e308], [1.7e308] * 3, [-60000.0, 60000.0]], ids=["wide", "top", "f16"])
def test_float_contrast_is_finite_at_the_ends_of_the_range(values):
    """Interpolated percentiles overflowed to [inf, inf], which a state writes as Infinity: not JSON."""
    from volumes.stats import _percentiles

    for dtype in ("float64", "float16") if max(map(abs, values)) < 65504 else ("float64",):
        lo, hi = _percentiles(np.array(values, dtype), 0.5, 99.5)
        assert np.isfinite([lo, hi]).all() and lo < hi


@pytest.mark.parametrize("dtype", ["bfloat16", "<q9", "garbage"])
def test_inspect_on_a_zarr_dtype_numpy_does_not_know_is_not_a_traceback(tmp_path, dtype):
    """np.dtype() raised TypeError on tensorstore's bfloat16 (before ml_dtypes was imported) or a broken name."""
    (tmp_path / "a.zarr").mkdir()
    (tmp_path / "a.zarr" / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [4, 4, 4], "chunks": [4, 4, 4], "dtype": dtype, "compressor": None,
        "fill_value": 0, "order": "C", "filters": None}))
    r = _cli("inspect", str(tmp_path / "a.zarr"))
    assert "Traceback" not in r.stderr and r.returncode in (0, 2) and r.stderr.count("\n") <= 1, r.stderr
    if dtype == "bfloat16":
        assert r.returncode == 0 and json.loads(r.stdout)["levels"][0]["dtype"] == "bfloat16", r.stderr
    else:  # reported, not read: no view shows such data, so inspect computes no contrast for it
        out = json.loads(r.stdout)
        assert r.returncode == 0 and out["view"] is None and "no ngserve view can show it" in out["view_reason"], r


@pytest.mark.parametrize("name, text", [
    (".zarray", '{"shape": 5, "chunks": [1], "dtype": "<u1"}'),
    (".zarray", '{"shape": [4], "chunks": null, "dtype": "<u1"}'),
    (".zattrs", '{"multiscales": [5]}'),
    (".zattrs", '{"multiscales": [{"datasets": [{"path": 5}]}]}'),
    ("attributes.json", '{"dimensions": [4], "blockSize": [1], "dataType": "uint8", "resolution": 5}'),
    ("attributes.json", '{"dimensions": [4], "blockSize": [1], "dataType": 5}'),
    ("info", '{"@type": "neuroglancer_multiscale_volume", "scales": [5]}'),
    ("info", '{"@type": "neuroglancer_annotations_v1", "dimensions": 5}'),
    ("zarr.json", '{"zarr_format": 3, "node_type": "array", "shape": [4], "codecs": 5}'),
])
def test_metadata_of_the_wrong_shape_is_a_source_error(tmp_path, name, text):
    """JSON of any shape reaches the readers; a number where a list belongs was a TypeError (a 500 on /-/open)."""
    if name == ".zattrs":
        (tmp_path / ".zgroup").write_text('{"zarr_format": 2}')
    (tmp_path / name).write_text(text)
    with pytest.raises(SourceError, match="metadata that does not fit its format"):
        open_dataset(tmp_path)
    r = _cli("inspect", str(tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not fit" in r.stderr, r.stderr
