"""``ngserve convert`` / ``volumes.convert``: inputs of every kind to OME-Zarr, checked with tensorstore."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import mrcfile
import nibabel
import numpy as np
import pytest
import tensorstore as ts
import tifffile

import volumes
from volumes.convert_sources import ConvertError

ROOT = Path(__file__).resolve().parent.parent


def kill_9_after_a_task(*argv, manifest: Path) -> int:
    """Run ``ngserve *argv``, kill -9 it once its resume ``manifest`` records a finished task;
    its return code."""
    proc = subprocess.Popen([sys.executable, "-m", "server", *map(str, argv)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if json.loads(manifest.read_text())["done"].get(""):
                    break
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    return proc.returncode


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "server", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, **kw)


def _level(path: Path, level: int = 0, version: int = 2) -> np.ndarray:
    driver = "zarr3" if version == 3 else "zarr"
    return ts.open({"driver": driver, "kvstore": {"driver": "file", "path": f"{path}/{level}/"}}, read=True).result().read().result()


def _attrs(path: Path, version: int = 2) -> dict:
    if version == 3:
        return json.loads((path / "zarr.json").read_text())["attributes"]
    return json.loads((path / ".zattrs").read_text())


def _volume(shape=(21, 37, 29), seed=0, dtype=np.uint16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 3000 + 100).astype(dtype)


def _tiff_stack(folder: Path, data: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i, plane in enumerate(data):  # z1 … z21: natural order puts z2 before z10
        tifffile.imwrite(folder / f"z{i + 1}.tif", plane)
    return folder


def reference_downsample(a: np.ndarray, method: str) -> np.ndarray:
    """Halve every axis longer than 1; a partial block at the end uses the voxels it has.
    mean rounds half to even; mode takes the most frequent value, the smallest on a tie."""
    f = [2 if s > 1 else 1 for s in a.shape]
    out_shape = [-(-s // k) for s, k in zip(a.shape, f)]
    padded = np.pad(a.astype(np.float64), [(0, o * k - s) for s, k, o in zip(a.shape, f, out_shape)],
                    constant_values=np.nan)
    blocks = padded.reshape(out_shape[0], f[0], out_shape[1], f[1], out_shape[2], f[2]).transpose(0, 2, 4, 1, 3, 5)
    blocks = blocks.reshape(*out_shape, -1)
    if method == "mean":
        return np.rint(np.nanmean(blocks, axis=-1)).astype(a.dtype)
    if method == "max":
        return np.nanmax(blocks, axis=-1).astype(a.dtype)
    assert method == "mode"
    out = np.empty(out_shape, a.dtype)
    for idx in np.ndindex(*out_shape):
        vals = blocks[idx][~np.isnan(blocks[idx])]
        uniq, counts = np.unique(vals, return_counts=True)
        out[idx] = uniq[np.argmax(counts)]  # unique is sorted: argmax takes the smallest of the tied
    return out


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "int32", "uint32", "float32"])
@pytest.mark.parametrize("method", ["mean", "min", "max", "stride", "mode"])
def test_tile_downsampling_equals_tensorstore(dtype, method):
    from volumes.convert_downsample import downsample

    rng = np.random.default_rng(3)
    info = np.iinfo(dtype) if dtype != "float32" else np.finfo(dtype)
    data = rng.integers(max(info.min, -(2**31)), min(info.max, 2**31 - 1), (2, 12, 10, 14), endpoint=True).astype(dtype)
    for shape, step in (((2, 12, 10, 14), (2, 2, 2)), ((2, 12, 10, 14), (1, 2, 2)), ((2, 11, 9, 14), (2, 2, 2))):
        part = data[:, :shape[1], :shape[2], :shape[3]]
        expected = ts.downsample(ts.array(part), [1, *step], method=method).read().result()
        np.testing.assert_array_equal(downsample(part, step, method, workers=3), expected, err_msg=f"{shape} {step}")


# -- inputs of every kind ------------------------------------------------------------------

def test_every_input_kind_converts_level0_exactly(tmp_path):
    data = _volume()
    inputs = {"stack": _tiff_stack(tmp_path / "stack", data)}
    inputs["ome"] = tmp_path / "multi.ome.tif"
    tifffile.imwrite(inputs["ome"], data, ome=True, compression="zlib", tile=(16, 16),
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 0.5})
    inputs["mrc"] = tmp_path / "map.mrc"
    with mrcfile.new(inputs["mrc"]) as mrc:
        mrc.set_data(data.astype(np.int16))
        mrc.voxel_size = (3.0, 2.0, 2.0)  # x, y, z in ångström
    inputs["h5"] = f"{tmp_path / 'file.h5'}:/group/raw"
    with h5py.File(tmp_path / "file.h5", "w") as f:
        f.create_dataset("group/raw", data=data, chunks=(4, 16, 16), compression="gzip")
    inputs["nifti"] = tmp_path / "vol.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(data.T), np.diag([0.3, 0.3, 0.3, 1.0])), inputs["nifti"])
    for kind, source in inputs.items():
        out = tmp_path / f"{kind}.ome.zarr"
        summary = volumes.convert(str(source), out, chunk=8)
        expected = data.astype(np.int16) if kind == "mrc" else data
        np.testing.assert_array_equal(_level(out, 0), expected, err_msg=kind)
        assert summary["levels"] == 4 and summary["shapes"][-1] == [1, 3, 5, 4], kind  # coarsest fits one chunk
    scale = lambda name: _attrs(tmp_path / name)["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]  # noqa: E731
    assert scale("ome.ome.zarr") == [0.5, 0.2, 0.2]
    assert _attrs(tmp_path / "ome.ome.zarr")["multiscales"][0]["axes"][0]["unit"] == "micrometer"
    assert scale("mrc.ome.zarr") == [0.2, 0.2, 0.3]  # ångström (x, y, z) -> nanometer, z first
    assert _attrs(tmp_path / "mrc.ome.zarr")["multiscales"][0]["axes"][2]["unit"] == "nanometer"


@pytest.mark.parametrize("kind", ["plain", "big-endian", "zlib strips", "lzw strips", "tiled"])
def test_tiff_stacks_are_read_in_bands_of_rows(tmp_path, monkeypatch, kind):
    import volumes.tiff

    monkeypatch.setattr(volumes.tiff, "STACK_BAND_BYTES", 1000)  # bands of 8 rows of 50 uint16
    options = {"plain": {}, "big-endian": {"byteorder": ">"}, "zlib strips": {"compression": "zlib", "rowsperstrip": 16},
               "lzw strips": {"compression": "lzw", "predictor": True, "rowsperstrip": 7}, "tiled": {"tile": (16, 16)}}
    data = _volume((3, 100, 50))
    for i, plane in enumerate(data):
        tifffile.imwrite(tmp_path / f"z{i}.tif", plane, **options[kind])
    ds = volumes.open_dataset(tmp_path)
    assert ds.levels[0].chunks == [1, 8, 50]
    store = ds.open_level(0)
    np.testing.assert_array_equal(store[:, 13:77, 5:40].read().result(), data[:, 13:77, 5:40])
    time.sleep(0.01)
    tifffile.imwrite(tmp_path / "z1.tif", data[1] + 1, **options[kind])  # replaced: no stale bytes from a cache
    np.testing.assert_array_equal(store[1].read().result(), data[1] + 1)


def test_arrays_and_channels_with_names(tmp_path):
    a, b = _volume(seed=1), _volume(seed=2)
    out = tmp_path / "two.ome.zarr"
    volumes.convert([a, b], out, chunk=16, channel_names=["dapi", "gfp"])
    np.testing.assert_array_equal(_level(out), np.stack([a, b]))
    attrs = _attrs(out)
    assert [x["name"] for x in attrs["multiscales"][0]["axes"]] == ["c", "z", "y", "x"]
    assert [c["label"] for c in attrs["omero"]["channels"]] == ["dapi", "gfp"]
    with pytest.raises(ConvertError, match="channels must match"):
        volumes.convert([a, a[:3]], tmp_path / "bad.zarr")


def test_axes_name_the_inputs_dimensions(tmp_path):
    data = _volume((12, 10, 8))
    xyz = np.ascontiguousarray(data.transpose(2, 1, 0))
    volumes.convert(xyz, tmp_path / "a.zarr", chunk=4, axes="xyz")
    np.testing.assert_array_equal(_level(tmp_path / "a.zarr"), data)
    two = np.stack([data, data + 1])  # stored z, c, y, x with a time axis of one point in front
    volumes.convert(two.transpose(1, 0, 2, 3)[None], tmp_path / "b.zarr", chunk=4, axes="tzcyx")
    np.testing.assert_array_equal(_level(tmp_path / "b.zarr"), two)
    # A file whose reader presents the dimensions in the wrong order: a plain zarr array stored x, y, z.
    ts.open({"driver": "zarr", "kvstore": f"file://{tmp_path}/xyz.zarr/", "metadata": {
        "shape": list(xyz.shape), "chunks": [4, 4, 4], "dtype": "<u2"}}, create=True).result().write(xyz).result()
    r = _cli("convert", tmp_path / "xyz.zarr", tmp_path / "c.zarr", "--axes", "xyz", "--chunk", "4")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(_level(tmp_path / "c.zarr"), data)
    r = _cli("convert", tmp_path / "xyz.zarr", tmp_path / "d.zarr", "--axes", "xyq")
    assert r.returncode == 2 and "--axes 'xyq' must name each of its 3 dimensions once" in r.stderr


def test_a_dask_array_input_is_read_tile_by_tile(tmp_path):
    import dask.array as da

    data = _volume((40, 24, 24))
    volumes.convert(da.from_array(data, chunks=(5, 24, 24)), tmp_path / "d.zarr", chunk=8, levels=2, max_memory=100_000)
    np.testing.assert_array_equal(_level(tmp_path / "d.zarr"), data)


# -- the pyramid, its placement and statistics -----------------------------------------------

@pytest.mark.parametrize("version", [2, 3])
def test_levels_match_a_numpy_reference_across_slabs(tmp_path, version):
    data = _volume((45, 37, 29))
    labels = (data // 700).astype(np.uint32)
    out = tmp_path / "pyr.ome.zarr"
    fmt = {"format": "ome-zarr-0.5", "shard": 16} if version == 3 else {}
    # A memory bound this small forces small tiles: their seams must not show in any level.
    summary = volumes.convert(data, out, chunk=4, levels=3, labels={"cells": labels},
                              max_memory=100_000 if version == 3 else 8_000,
                              voxel_size=(2.0, 0.5, 0.5), units="micrometer", translation=(10, 0, 0), **fmt)
    tile = summary["tile"]  # smaller than the volume along every axis: seams in z, y and x
    assert tile[0] < data.shape[0] and tile[1] < data.shape[1] and tile[2] < data.shape[2], tile
    for root, method, source in ((out, "mean", data), (out / "labels" / "cells", "mode", labels)):
        prev = _level(root, 0, version)
        np.testing.assert_array_equal(prev, source)
        for level in (1, 2):
            cur = _level(root, level, version)
            np.testing.assert_array_equal(cur, reference_downsample(prev, method), err_msg=f"{root} level {level}")
            prev = cur
    ome = _attrs(out, version)
    ms = (ome["ome"] if version == 3 else ome)["multiscales"][0]
    for k, d in enumerate(ms["datasets"]):
        scale, trans = (t[t["type"]] for t in d["coordinateTransformations"])
        f = 2**k
        assert scale == [2.0 * f, 0.5 * f, 0.5 * f]
        assert trans == pytest.approx([10 + (f - 1) * 1.0, (f - 1) * 0.25, (f - 1) * 0.25])  # block centres
    stats = ome["ngserve"]["levels"]
    assert stats[0] == {"path": "0", "min": int(data.min()), "max": int(data.max()), "mean": pytest.approx(data.mean())}
    level2 = _level(out, 2, version)
    assert stats[2]["mean"] == pytest.approx(level2.mean())
    window = (ome["ome"] if version == 3 else ome)["omero"]["channels"][0]["window"]
    lo, hi = np.percentile(data, [0.5, 99.5])
    assert abs(window["start"] - lo) < 60 and abs(window["end"] - hi) < 60  # sampled, so close, not equal


def test_ranges_convert_a_sub_volume_in_place(tmp_path):
    data = _volume((20, 30, 40))
    stack = _tiff_stack(tmp_path / "stack", data)
    out = tmp_path / "part.zarr"
    r = _cli("convert", stack, out, "--ranges", "10:30,,5:9", "--chunk", "8", "--voxel-size", "2,1,1",
             "--labels", f"seg={stack}")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(_level(out), data[5:9, :, 10:30])
    np.testing.assert_array_equal(_level(out / "labels" / "seg"), data[5:9, :, 10:30])
    trans = _attrs(out)["multiscales"][0]["datasets"][0]["coordinateTransformations"][1]["translation"]
    assert trans == [(5 + 0.5) * 2, 0.5, 10.5]  # the crop stays where it was in the stack
    r = _cli("convert", stack, tmp_path / "bad.zarr", "--ranges", "0:50,,")
    assert r.returncode == 2 and "x range 0:50 is outside 0:40" in r.stderr


def test_gaussian_levels_match_scipy_across_tile_seams(tmp_path):
    from scipy.ndimage import gaussian_filter

    data = _volume((45, 37, 29))
    out = tmp_path / "g.zarr"
    summary = volumes.convert(data, out, chunk=4, levels=3, method="gaussian", max_memory=4_000)
    assert all(t < s for t, s in zip(summary["tile"], data.shape))  # tiles smaller than the volume: seams
    prev = data
    for level in (1, 2):
        sigma = [2 / 3 if s > 1 else 0 for s in prev.shape]
        smooth = gaussian_filter(prev.astype(np.float32), sigma, mode="mirror", truncate=4.0)[::2, ::2, ::2]
        expected = np.clip(np.rint(smooth), 0, 65535).astype(np.uint16)
        got = _level(out, level)
        np.testing.assert_array_equal(got, expected, err_msg=f"level {level}")
        prev = got
    for d in _attrs(out)["multiscales"][0]["datasets"]:  # a coarse voxel sits on a fine one
        assert d["coordinateTransformations"][1]["translation"] == [0.0, 0.0, 0.0]


def test_stride_levels_keep_voxel_zero_centred(tmp_path):
    data = _volume((16, 16, 16))
    out = tmp_path / "s.zarr"
    volumes.convert(data, out, chunk=4, levels=3, method="stride")
    np.testing.assert_array_equal(_level(out, 2), data[::4, ::4, ::4])
    for d in _attrs(out)["multiscales"][0]["datasets"]:
        assert d["coordinateTransformations"][1]["translation"] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("version", [2, 3])
def test_metadata_validates_against_the_ome_zarr_schema(tmp_path, version):
    import zarr

    if version == 3:
        from ome_zarr_models.v05.image import Image
        from ome_zarr_models.v05.image_label import ImageLabel
    else:
        from ome_zarr_models.v04.image import Image
        from ome_zarr_models.v04.image_label import ImageLabel
    data = _volume((20, 24, 24))
    out = tmp_path / "v.ome.zarr"
    fmt = {"format": "ome-zarr-0.5", "shard": 16} if version == 3 else {}
    volumes.convert([data, data], out, chunk=8, labels={"seg": (data > 1500).astype(np.uint8)}, **fmt)
    Image.from_zarr(zarr.open_group(str(out), mode="r"))
    ImageLabel.from_zarr(zarr.open_group(str(out / "labels" / "seg"), mode="r"))


def test_dtype_needs_explicit_rescaling(tmp_path):
    data = np.array([[[0, 1000, 2000, 4000]]], np.uint16)
    with pytest.raises(ConvertError, match="--rescale"):
        volumes.convert(data, tmp_path / "a.zarr", dtype="uint8")
    volumes.convert(data, tmp_path / "b.zarr", dtype="uint8", rescale=(1000, 3000), levels=1)
    np.testing.assert_array_equal(_level(tmp_path / "b.zarr"), [[[0, 0, 128, 255]]])


def test_chunks_of_only_the_fill_value_are_not_written(tmp_path):
    data = np.zeros((16, 16, 16), np.uint8)
    data[:4, :4, :4] = 7
    volumes.convert(data, tmp_path / "z.zarr", chunk=4, levels=1)
    chunks = [p for p in (tmp_path / "z.zarr" / "0").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(chunks) == 1


# -- the command line ----------------------------------------------------------------------

def test_cli_errors_are_one_line_with_exit_2(tmp_path):
    data = _volume((4, 8, 8))
    stack = _tiff_stack(tmp_path / "stack", data)
    out = tmp_path / "o.zarr"
    assert _cli("convert", stack, out, "--chunk", "4").returncode == 0
    r = _cli("convert", stack, out)
    assert r.returncode == 2 and r.stderr.strip() == f"ngserve convert: error: {out} exists; pass --overwrite to replace it"
    assert _cli("convert", stack, out, "--overwrite", "--chunk", "4", "--levels", "2").returncode == 0
    (stack / "z3.tif").write_bytes(b"not a tiff at all")
    r = _cli("convert", stack, tmp_path / "p.zarr")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "z3.tif" in r.stderr, r.stderr
    tifffile.imwrite(stack / "z3.tif", np.zeros((9, 8), np.uint16))
    r = _cli("convert", stack, tmp_path / "p.zarr")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "z3.tif" in r.stderr, r.stderr
    r = _cli("convert", tmp_path / "o.zarr", tmp_path / "q.zarr", "--max-memory", "1KiB")
    assert r.returncode == 2 and "--max-memory" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_output_opens_with_inspect_and_link_with_contrast(tmp_path):
    data = _volume((24, 32, 32))
    tifffile.imwrite(tmp_path / "in.ome.tif", data, ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 0.5})
    out = tmp_path / "out.ome.zarr"
    r = _cli("convert", tmp_path / "in.ome.tif", out, "--chunk", "8")
    assert r.returncode == 0, r.stderr
    assert "3 levels (24x32x32 12x16x16 6x8x8)" in r.stdout
    converted = json.loads(_cli("inspect", out).stdout)
    original = json.loads(_cli("inspect", tmp_path / "in.ome.tif").stdout)
    assert converted["contrast_from"] == "omero window"
    lo, hi = converted["contrast"]
    assert 100 <= lo < 200 and 2900 < hi <= 3100
    # Served, the conversion sits exactly where the input does, at every level.
    assert converted["axes"] == original["axes"] and converted["offset"] == pytest.approx(original["offset"])
    r = _cli("link", out, "--served-at", f"{tmp_path}=https://example.org/data", "--viewer", "https://ng.example/",
             "--json")
    assert r.returncode == 0, r.stderr
    layer = json.loads(r.stdout)["layers"][0]
    assert layer["type"] == "image" and layer["source"] == "zarr2://https://example.org/data/out.ome.zarr/"
    assert layer["shaderControls"]["normalized"]["range"] == [lo, hi]


# -- interruption and memory ----------------------------------------------------------------

def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", [[], ["--format", "ome-zarr-0.5", "--shard", "32"], ["--format", "precomputed"]])
def test_kill_9_then_resume_gives_identical_bytes(tmp_path, fmt):
    data = _volume((256, 64, 64))
    stack = _tiff_stack(tmp_path / "stack", data)
    # 16 tasks, each a tile of 8 slices of level 1 (16 of level 0); shards of 32 align with tiles.
    args = ["--chunk", "8", "--levels", "2", "--max-memory", "600KiB", "--workers", "1", *fmt]
    clean = tmp_path / "clean" / "out.zarr"  # the same name: the group's name is the folder's
    assert _cli("convert", stack, clean, *args).returncode == 0
    out = tmp_path / "out.zarr"
    manifest = tmp_path / ".out.zarr.partial-convert" / ".ngserve-convert" / "manifest.json"
    returncode = kill_9_after_a_task("convert", stack, out, *args, manifest=manifest)
    assert returncode == -signal.SIGKILL and not out.exists(), "the run ended before it could be killed"
    done = json.loads(manifest.read_text())["done"][""]
    assert 0 < len(done) < 16
    r = _cli("convert", stack, out, *args, "--resume")
    assert r.returncode == 0, r.stderr
    assert f"resumed after {len(done)} finished tasks" in r.stdout  # the finished tasks were not redone
    assert _files(out) == _files(clean)
    assert not (tmp_path / ".out.zarr.partial-convert").exists()


# VmHWM, not getrusage's ru_maxrss: the latter survives exec, so it would include the test
# process's own size (it has just written the input) at the moment it forked.
_PEAK = """
import json, re, sys
import volumes
summary = volumes.convert(sys.argv[1], sys.argv[2], chunk=32, levels=4, max_memory=int(sys.argv[3]), workers=2)
peak = int(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
print(json.dumps({"peak": peak, "tile": summary["tile"]}))
"""


def test_peak_memory_stays_flat_as_the_input_grows(tmp_path):
    budget = 32 << 20
    runs = []
    for shape in ((128, 512, 512), (256, 1024, 512)):  # 64 MiB, then 4x: twice the slices, twice the rows
        stack = tmp_path / f"stack{shape[0]}"
        stack.mkdir()
        plane = (np.arange(shape[1] * shape[2], dtype=np.uint32) % 4099).astype(np.uint16).reshape(shape[1:])
        for z in range(shape[0]):
            tifffile.imwrite(stack / f"z{z}.tif", plane + z)
        r = subprocess.run([sys.executable, "-c", _PEAK, str(stack), str(tmp_path / f"o{shape[0]}.zarr"), str(budget)],
                           capture_output=True, text=True, cwd=ROOT, timeout=600,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert r.returncode == 0, r.stderr
        runs.append(json.loads(r.stdout.splitlines()[-1]))
        shutil.rmtree(stack)
    (small, large) = (run["peak"] for run in runs)
    print(f"peak RSS {small >> 20} MiB at 64 MiB input, {large >> 20} MiB at 256 MiB; tiles {[r['tile'] for r in runs]}")
    assert runs[1]["tile"][1] < 1024 and runs[1]["tile"][2] <= 512  # the plane is cut into tiles within the bound
    assert large < small * 1.25, f"peak RSS {small >> 20} MiB at 64 MiB input, {large >> 20} MiB at 256 MiB"
    assert large < budget + (160 << 20)  # the bound plus the interpreter and its libraries


def test_a_leaf_is_read_only_after_the_writes_of_the_leaf_two_before_are_committed(tmp_path):
    """The pipeline holds two leaf tiles, whatever a task's depth: leaf k+1 is read while leaf k is
    written and downsampled, never while leaf k-1's write is still pending.  (Reading ahead past a
    pending write let a third tile in: peak RSS grew from 1.26 GiB at 4 GiB input, whose tasks
    have 2 leaves, to 1.82 GiB at 16 GiB, whose tasks have 8.)  Slow writes (gzip on one
    thread) against instant reads make the race show; the reads check the committed chunk files."""
    import dask.array as da

    tz = 4
    data = (np.random.default_rng(0).integers(1, 4000, (64, 512, 512))).astype(np.uint16)  # no fill-only chunk
    out = tmp_path / "o.zarr"
    level0 = tmp_path / ".o.zarr.partial-convert" / "0"
    early: list[tuple[int, list[int]]] = []

    def check(block: np.ndarray, block_info=None) -> np.ndarray:
        leaf = block_info[0]["array-location"][0][0] // tz
        missing = [j for j in range(leaf - 1) if not (level0 / str(j) / "0" / "0").exists()]
        if missing:
            early.append((leaf, missing))
        return block

    source = da.from_array(data, chunks=(tz, 512, 512)).map_blocks(check, dtype=data.dtype)
    summary = volumes.convert(source, out, chunk=[tz, 512, 512], levels=4, compression="gzip", workers=1,
                              max_memory=12 << 20)
    assert summary["tile"] == [tz, 512, 512] and summary["tasks"] < 16  # tasks of several leaves
    assert not early, f"leaves read before the writes of leaves two back were committed: {early[:5]}"
    np.testing.assert_array_equal(_level(out), data)


# -- precomputed ---------------------------------------------------------------------------

@pytest.mark.parametrize("sharded", [False, True])
def test_precomputed_image_and_compressed_segmentation_labels(tmp_path, sharded):
    data = _volume((45, 37, 29))
    labels = (data // 700).astype(np.uint8)
    out = tmp_path / "pc"
    volumes.convert(data, out, format="precomputed", chunk=8, levels=3, voxel_size=(8, 4, 4), units="nanometer",
                    labels={"cells": labels}, max_memory=400_000, shard=8 if sharded else None)
    for root, method, source, dtype in ((out, "mean", data, "uint16"), (out / "labels" / "cells", "mode", labels, "uint32")):
        info = json.loads((root / "info").read_text())
        assert info["data_type"] == dtype and info["ngserve"]["levels"][0]["max"] == int(source.max())
        assert [s["resolution"] for s in info["scales"]] == [[4, 4, 8], [8, 8, 16], [16, 16, 32]]
        assert all(("sharding" in s) == sharded for s in info["scales"])
        if root != out:
            assert {s["encoding"] for s in info["scales"]} == {"compressed_segmentation"}
        ds = volumes.open_dataset(root)
        prev = None
        for k in range(3):
            zyx = np.asarray(ds.open_level(k).read().result())[..., 0].transpose(2, 1, 0)
            expected = source if k == 0 else reference_downsample(prev, method)
            np.testing.assert_array_equal(zyx, expected, err_msg=f"{root} level {k}")
            prev = zyx
    inspected = json.loads(_cli("inspect", out).stdout)
    assert inspected["format"] == "precomputed" and len(inspected["levels"]) == 3


# -- dask ------------------------------------------------------------------------------------

def test_dask_local_cluster_equals_the_single_process_run(tmp_path):
    data = _volume((64, 40, 36))
    stack = _tiff_stack(tmp_path / "stack", data)
    args = ["--chunk", "8", "--levels", "3", "--max-memory", "400KiB", "--labels", f"seg={stack}"]
    single, spread = tmp_path / "one" / "out.zarr", tmp_path / "dask" / "out.zarr"
    assert _cli("convert", stack, single, *args).returncode == 0
    r = _cli("convert", stack, spread, *args, "--dask", "local", "--workers", "2")
    assert r.returncode == 0, r.stderr
    # Per image: 4 tasks build levels 0-1 from the input, then 2 build level 2 from level 1.
    assert "12 tasks on dask local" in r.stdout
    assert _files(spread) == _files(single)
    # Sharded: tiles are whole shards, so tasks never share one.
    for fmt in ("ome-zarr-0.5", "precomputed"):
        sharded = ["--format", fmt, "--shard", "16", "--chunk", "8", "--levels", "3", "--max-memory", "400KiB"]
        single, spread = tmp_path / "one" / f"{fmt}.zarr", tmp_path / "dask" / f"{fmt}.zarr"
        assert _cli("convert", stack, single, *sharded).returncode == 0
        r = _cli("convert", stack, spread, *sharded, "--dask", "local", "--workers", "2")
        assert r.returncode == 0, r.stderr
        assert "tasks on dask local" in r.stdout and _files(spread) == _files(single), fmt


def test_resume_refuses_a_partial_output_made_with_other_options(tmp_path):
    data = _volume((64, 16, 16))
    out = tmp_path / "o.zarr"

    def stop(done, total):
        raise KeyboardInterrupt  # Ctrl-C after the first task

    with pytest.raises(KeyboardInterrupt):
        volumes.convert(data, out, chunk=8, levels=2, max_memory=40_000, progress=stop)
    assert (tmp_path / ".o.zarr.partial-convert").is_dir() and not out.exists()
    with pytest.raises(ConvertError, match="started with other inputs or options; run without --resume"):
        volumes.convert(data, out, chunk=4, levels=2, max_memory=40_000, resume=True)
    summary = volumes.convert(data, out, chunk=8, levels=2, max_memory=40_000, resume=True)
    assert summary["resumed_tasks"] == 1
    np.testing.assert_array_equal(_level(out), data)


# -- adding levels to an existing OME-Zarr ---------------------------------------------------

@pytest.mark.parametrize("version", [2, 3])
def test_add_levels_equals_converting_with_them(tmp_path, version):
    data = _volume((45, 37, 29))
    fmt = {"format": "ome-zarr-0.5", "shard": 16} if version == 3 else {}
    short, full = tmp_path / "short.zarr", tmp_path / "full.zarr"
    volumes.convert(data, short, chunk=8, levels=2, voxel_size=(2, 1, 1), **fmt)
    volumes.convert(data, full, chunk=8, levels=4, voxel_size=(2, 1, 1), **fmt)

    def pyramid(root):
        attrs = _attrs(root, version)
        ms = (attrs["ome"] if version == 3 else attrs)["multiscales"][0]
        return ms["datasets"], attrs["ngserve"]["levels"], [_level(root, k, version) for k in range(len(ms["datasets"]))]

    r = _cli("convert", "--add-levels", "2", short, "--max-memory", "30KiB")  # small tiles: seams
    assert r.returncode == 0, r.stderr
    assert "added levels 2, 3" in r.stdout
    (got_ds, got_stats, got), (want_ds, want_stats, want) = pyramid(short), pyramid(full)
    assert got_ds == want_ds and got_stats == want_stats
    for k in range(4):
        np.testing.assert_array_equal(got[k], want[k], err_msg=f"level {k}")
    assert not (short / ".ngserve-add-levels").exists()
    # From level 1: levels 2 and 3 are rebuilt, a third is added.
    volumes.convert(short, add_levels=3, from_level=1, overwrite=True)
    datasets, _, arrays = pyramid(short)
    assert [d["path"] for d in datasets] == ["0", "1", "2", "3", "4"] and arrays[4].shape == (3, 3, 2)
    np.testing.assert_array_equal(arrays[3], want[3])
    np.testing.assert_array_equal(arrays[4], reference_downsample(arrays[3], "mean"))
    r = _cli("convert", "--add-levels", "1", short, tmp_path / "other.zarr")
    assert r.returncode == 2 and "give only its path" in r.stderr
    r = _cli("convert", "--add-levels", "1", tmp_path)
    assert r.returncode == 2 and "not an OME-Zarr image group" in r.stderr


def test_precomputed_jpeg_for_uint8_images(tmp_path):
    z, y, x = np.mgrid[:24, :40, :48]
    data = (120 + 60 * np.sin(x / 6) * np.cos(y / 9) + z).astype(np.uint8)  # smooth: jpeg keeps it close
    out = tmp_path / "jpeg"
    volumes.convert(data, out, format="precomputed", encoding="jpeg", chunk=16, levels=2, voxel_size=(8, 8, 8),
                    units="nanometer")
    info = json.loads((out / "info").read_text())
    assert [s["encoding"] for s in info["scales"]] == ["jpeg", "jpeg"]
    chunk = next(p for p in (out / info["scales"][0]["key"]).iterdir())
    assert chunk.read_bytes()[:2] == b"\xff\xd8"  # a JPEG file
    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{out}/"}).result()
    got = store.read().result()[..., 0].transpose(2, 1, 0)
    assert got.shape == data.shape and np.abs(got.astype(int) - data).mean() < 2  # lossy, but close
    with pytest.raises(ConvertError, match="--encoding jpeg takes uint8 images"):
        volumes.convert(data.astype(np.uint16), tmp_path / "j16", format="precomputed", encoding="jpeg")
    with pytest.raises(ConvertError, match="needs --format precomputed"):
        volumes.convert(data, tmp_path / "jz", encoding="jpeg")
