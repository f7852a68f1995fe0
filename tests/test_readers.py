"""TIFF (slices and files), MRC, HDF5 and NIfTI read as Datasets whose level is a tensorstore.

Inputs are written here with each format's own library; every reader must give the
source array back exactly, in the axis order its Dataset declares, locally and over
a real ngserve's http (Range requests).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import h5py
import mrcfile
import nibabel as nib
import numpy as np
import pytest
import tifffile

import volumes
from volumes import SourceError, open_dataset

RNG = np.random.default_rng(7)
STACK = RNG.integers(0, 255, (12, 31, 43), dtype=np.uint8)
OME = RNG.integers(0, 60000, (5, 2, 33, 47), dtype=np.uint16)  # Z, C, Y, X
TILED = RNG.random((5, 70, 90)).astype(np.float32)
TILED16 = RNG.integers(-30000, 30000, (3, 45, 77), dtype=np.int16)
MRC = RNG.normal(size=(9, 21, 17)).astype(np.float32)
MRC16 = RNG.integers(-2000, 2000, (6, 13, 11), dtype=np.int16)
H5 = RNG.integers(-3000, 3000, (13, 37, 29), dtype=np.int16)
H5_CREMI = RNG.integers(0, 255, (7, 19, 23), dtype=np.uint8)
NII = RNG.integers(0, 4000, (11, 9, 7), dtype=np.uint16)  # x, y, z as nibabel indexes it
NII_F = RNG.random((6, 5, 4, 3)).astype(np.float32)  # x, y, z, t


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("readers")
    (d / "scan").mkdir()
    for i, plane in enumerate(STACK):  # z1 … z12: z10 must come after z9
        tifffile.imwrite(d / "scan" / f"z{i + 1}.tif", plane)
    (d / "scan" / "notes.txt").write_text("not a slice")
    tifffile.imwrite(
        d / "cells.ome.tif", OME, ome=True,
        metadata={"axes": "ZCYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.3, "PhysicalSizeZ": 1.5,
                  "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm", "PhysicalSizeZUnit": "µm",
                  "Channel": {"Name": ["dapi", "gfp"]}},
    )
    tifffile.imwrite(d / "tiled.tif", TILED, tile=(32, 32), compression="zlib", photometric="minisblack")
    tifffile.imwrite(d / "tiled16.tif", TILED16, tile=(16, 32), compression="zstd", photometric="minisblack")
    with mrcfile.new(d / "map.mrc") as m:
        m.set_data(MRC)
        m.voxel_size = (1.1, 1.2, 1.3)
        m.header.origin = (11.0, 24.0, 39.0)
    with mrcfile.new(d / "tomo.rec") as m:
        m.set_data(MRC16)
        m.voxel_size = 2.0
        m.header.nxstart, m.header.nystart, m.header.nzstart = 3, -4, 5
    with h5py.File(d / "vol.h5", "w") as f:
        dset = f.create_group("volumes").create_dataset("raw", data=H5, chunks=(4, 16, 16), compression="gzip")
        dset.attrs["element_size_um"] = [0.04, 0.008, 0.008]
        f.create_dataset("other", data=np.zeros(3))
    with h5py.File(d / "cremi.hdf5", "w") as f:
        dset = f.create_dataset("volumes/labels", data=H5_CREMI)
        dset.attrs["resolution"] = [40.0, 4.0, 4.0]
        dset.attrs["offset"] = [80.0, 8.0, 12.0]
    img = nib.Nifti1Image(NII, np.diag([0.5, 0.75, 2.0, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, d / "brain.nii.gz")
    img = nib.Nifti1Image(NII_F, np.diag([2.0, 2.0, 3.0, 1.0]))
    img.header.set_zooms((2.0, 2.0, 3.0, 0.5))
    img.header.set_xyzt_units("micron", "msec")
    nib.save(img, d / "series.nii")
    return d


def read(ds) -> np.ndarray:
    return np.asarray(ds.open_level(0).read().result())


def scales(ds) -> dict[str, tuple[float, str]]:
    return {a.name: (a.scale, a.unit) for a in ds.axes}


def assert_scales(ds, expected: dict[str, tuple[float, str]]) -> None:
    got = scales(ds)
    assert got.keys() == expected.keys(), got
    for name, (scale, unit) in expected.items():
        assert got[name][1] == unit and math.isclose(got[name][0], scale, rel_tol=1e-6), (name, got[name])


# -- TIFF --------------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["scan", "scan/*.tif", "scan/z?.tif"])
def test_tiff_slices_in_natural_order(data, source):
    ds = open_dataset(str(data / source))
    count = 9 if "?" in source else 12
    assert (ds.format, ds.native, ds.scheme, ds.name) == ("tiff", False, None, "scan")
    assert [a.name for a in ds.axes] == ["z", "y", "x"]
    assert ds.shape == [count, 31, 43] and ds.dtype == "uint8"
    assert ds.levels[0].chunks == [1, 31, 43]  # one slice per chunk
    assert ds.extras["first_slice"] == "z1.tif" and ds.extras["last_slice"] == f"z{count}.tif"
    assert np.array_equal(read(ds), STACK[:count])
    # A read of one slice's corner decodes that slice alone, and gives the right values.
    assert np.array_equal(np.asarray(ds.open_level(0)[count - 1, 5:9, 40:].read().result()), STACK[count - 1, 5:9, 40:])


def test_ome_tiff_sizes_units_and_channels(data):
    ds = open_dataset(str(data / "cells.ome.tif"))
    assert ds.format == "tiff" and ds.name == "cells"
    assert [(a.name, a.type) for a in ds.axes] == [("c'", "channel"), ("z", "space"), ("y", "space"), ("x", "space")]
    assert_scales(ds, {"c'": (1.0, ""), "z": (1.5e-6, "m"), "y": (0.3e-6, "m"), "x": (0.25e-6, "m")})
    assert ds.extras["channel_names"] == ["dapi", "gfp"]
    assert ds.shape == [2, 5, 33, 47] and ds.dtype == "uint16"
    assert ds.levels[0].chunks == [1, 1, 33, 47]  # one page per chunk
    assert np.array_equal(read(ds), OME.transpose(1, 0, 2, 3))


@pytest.mark.parametrize(("name", "array", "tile"), [("tiled.tif", TILED, [32, 32]), ("tiled16.tif", TILED16, [16, 32])])
def test_tiled_compressed_tiff_reads_by_tile(data, name, array, tile):
    ds = open_dataset(str(data / name))
    assert [a.name for a in ds.axes] == ["z", "y", "x"]
    assert ds.shape == list(array.shape) and ds.dtype == array.dtype.name
    assert ds.levels[0].chunks == [1, *tile]
    assert ds.levels[0].encoding in ("adobe_deflate", "zstd")
    assert np.array_equal(read(ds), array)
    store = ds.open_level(0)  # a region across tile borders, with the image's ragged last tiles
    assert np.array_equal(np.asarray(store[1, 10:44, 20:77].read().result()), array[1, 10:44, 20:77])


# -- MRC ---------------------------------------------------------------------------------

def test_mrc_voxel_size_and_origin(data):
    ds = open_dataset(str(data / "map.mrc"))
    assert (ds.format, ds.native, ds.name, ds.dtype, ds.shape) == ("mrc", False, "map", "float32", [9, 21, 17])
    assert [a.name for a in ds.axes] == ["z", "y", "x"]
    assert_scales(ds, {"z": (1.3e-10, "m"), "y": (1.2e-10, "m"), "x": (1.1e-10, "m")})
    assert ds.offset == pytest.approx([39.0 / 1.3, 24.0 / 1.2, 11.0 / 1.1])  # origin in voxels, z y x
    assert np.array_equal(read(ds), MRC)


def test_mrc_without_origin_is_placed_by_nstart(data):
    ds = open_dataset(str(data / "tomo.rec"))
    assert ds.dtype == "int16" and ds.shape == [6, 13, 11]
    assert_scales(ds, {"z": (2e-10, "m"), "y": (2e-10, "m"), "x": (2e-10, "m")})
    assert ds.offset == [5.0, -4.0, 3.0]
    assert np.array_equal(read(ds), MRC16)


# -- HDF5 --------------------------------------------------------------------------------

def test_hdf5_dataset_with_element_size_um(data):
    ds = open_dataset(f"{data / 'vol.h5'}:/volumes/raw")
    assert (ds.format, ds.native, ds.dtype, ds.shape) == ("hdf5", False, "int16", [13, 37, 29])
    assert ds.levels[0].chunks == [4, 16, 16]  # the file's own chunks
    assert ds.extras["hdf5_dataset"] == "/volumes/raw"
    assert_scales(ds, {"z": (40e-9, "m"), "y": (8e-9, "m"), "x": (8e-9, "m")})
    assert np.array_equal(read(ds), H5)


def test_hdf5_cremi_resolution_and_offset_and_only_dataset(data):
    ds = open_dataset(str(data / "cremi.hdf5"))  # the file's only dataset needs no path
    assert ds.extras["hdf5_dataset"] == "/volumes/labels"
    assert_scales(ds, {"z": (40e-9, "m"), "y": (4e-9, "m"), "x": (4e-9, "m")})
    assert ds.offset == [2.0, 2.0, 3.0]
    assert np.array_equal(read(ds), H5_CREMI)


# -- NIfTI -------------------------------------------------------------------------------

def test_nifti_gz_pixdim_in_mm(data):
    ds = open_dataset(str(data / "brain.nii.gz"))
    assert (ds.format, ds.name, ds.dtype, ds.shape) == ("nifti", "brain", "uint16", [7, 9, 11])
    assert_scales(ds, {"z": (2e-3, "m"), "y": (0.75e-3, "m"), "x": (0.5e-3, "m")})
    assert np.array_equal(read(ds), NII.transpose())


def test_nifti_4d_micron_and_msec(data):
    ds = open_dataset(str(data / "series.nii"))
    assert [a.name for a in ds.axes] == ["t", "z", "y", "x"] and ds.dtype == "float32"
    assert_scales(ds, {"t": (0.5e-3, "s"), "z": (3e-6, "m"), "y": (2e-6, "m"), "x": (2e-6, "m")})
    assert np.array_equal(read(ds), NII_F.transpose())


# -- what a listing and the CLI see --------------------------------------------------------

def test_volume_file_kind():
    kinds = {n: volumes.volume_file_kind(n) for n in
             ["a.tif", "b.TIFF", "c.ome.tif", "d.mrc", "e.map", "f.rec", "g.h5", "h.hdf5", "i.nii", "j.nii.gz",
              "k.zarr", "l.txt", ".tif", "m.gz"]}
    assert kinds == {"a.tif": "tiff", "b.TIFF": "tiff", "c.ome.tif": "tiff", "d.mrc": "mrc", "e.map": "mrc",
                     "f.rec": "mrc", "g.h5": "hdf5", "h.hdf5": "hdf5", "i.nii": "nifti", "j.nii.gz": "nifti",
                     "k.zarr": None, "l.txt": None, ".tif": None, "m.gz": None}


def ngserve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *args], capture_output=True, text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_inspect_prints_metadata_with_contrast(data):
    result = ngserve("inspect", str(data / "cells.ome.tif"))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["format"] == "tiff" and out["neuroglancer_source"] is None
    assert out["levels"][0]["shape"] == [2, 5, 33, 47]
    assert out["channel_names"] == ["dapi", "gfp"]
    lo, hi = out["contrast"]
    assert 0 <= lo < hi <= 60000
    assert "Neuroglancer cannot read directly" in out["viewer_problem"]
    assert out["view"] == "precomputed" and "/-/precomputed/" in out["view_reason"]  # how ngserve shows it


def test_link_says_the_format_needs_ngserve(data):
    line = one_line_error(ngserve("link", str(data / "map.mrc"), "--served-at", f"{data}=http://127.0.0.1:9"))
    # Not on an ngserve (nothing answers at :9): refused, saying to serve it.
    assert "map.mrc: an MRC map, which Neuroglancer cannot read directly" in line and "serve it with ngserve" in line
    line = one_line_error(ngserve("link", str(data / "scan")))
    assert "a TIFF stack" in line


# -- errors --------------------------------------------------------------------------------

def bad_inputs(root: Path) -> dict[str, tuple[str, list[str]]]:
    """source -> words its one-line error must contain."""
    (root / "uneven").mkdir()
    for i in range(1, 10):
        tifffile.imwrite(root / "uneven" / f"s{i}.tif", np.zeros((8, 30 if i == 7 else 9), np.uint8))
    (root / "mixed").mkdir()
    for i in range(1, 4):
        tifffile.imwrite(root / "mixed" / f"s{i}.tif", np.zeros((8, 9), np.uint16 if i == 3 else np.uint8))
    (root / "broken").mkdir()
    tifffile.imwrite(root / "broken" / "a1.tif", np.zeros((4, 4), np.uint8))
    (root / "broken" / "a2.tif").write_bytes(b"II*\x00garbage, not a TIFF")
    (root / "junk.tif").write_bytes(b"this is not a tiff at all")
    (root / "bad.mrc").write_bytes(b"\x00" * 2048)
    with mrcfile.new(root / "short.mrc") as m:
        m.set_data(np.zeros((4, 8, 8), np.float32))
    data = (root / "short.mrc").read_bytes()
    (root / "short.mrc").write_bytes(data[:-100])
    with h5py.File(root / "f.h5", "w") as f:
        f.create_dataset("grp/a", data=np.zeros((2, 2)))
        f.create_dataset("b", data=np.zeros((2, 2)))
    (root / "nope.nii").write_bytes(b"\x00" * 400)
    return {
        str(root / "uneven"): ("s7.tif", ["8x30", "s1.tif", "8x9"]),
        str(root / "mixed"): ("s3.tif", ["uint16", "uint8"]),
        str(root / "broken"): ("a2.tif", ["not a readable TIFF"]),
        str(root / "junk.tif"): ("junk.tif", ["not a readable TIFF"]),
        str(root / "bad.mrc"): ("bad.mrc", ["not a valid MRC file"]),
        str(root / "short.mrc"): ("short.mrc", ["truncated"]),
        f"{root / 'f.h5'}:/grp/missing": ("f.h5:/grp/missing", ["no such dataset", "/grp/a", "/b"]),
        f"{root / 'f.h5'}:/grp": ("f.h5:/grp", ["a group, not a dataset"]),
        str(root / "f.h5"): ("f.h5", ["several datasets: name one as FILE.h5:/path/in/file", "/b, /grp/a"]),
        str(root / "nope.nii"): ("nope.nii", ["not a readable NIfTI image"]),
    }


def test_errors_are_one_line_naming_the_file(tmp_path):
    for source, (name, words) in bad_inputs(tmp_path).items():
        with pytest.raises(SourceError) as caught:
            open_dataset(source)
        message = str(caught.value)
        assert "\n" not in message and name in message, message
        for word in words:
            assert word in message, (word, message)


def test_cli_errors_exit_2_with_one_line(tmp_path):
    for source, (name, words) in bad_inputs(tmp_path).items():
        line = one_line_error(ngserve("inspect", source))
        assert name in line and words[0] in line, line


# -- over http, through a real ngserve -------------------------------------------------------

def test_http_sources_read_through_range_requests(data, start_server):
    srv = start_server("serve", str(data))
    cases = {
        "cells.ome.tif": OME.transpose(1, 0, 2, 3),
        "tiled16.tif": TILED16,
        "map.mrc": MRC,
        "vol.h5:/volumes/raw": H5,
        "brain.nii.gz": NII.transpose(),
        "scan/": STACK,  # a folder of slices, found through ngserve's HTML listing
        "scan/z1*.tif": STACK[[0, 9, 10, 11]],  # z1, z10, z11, z12 (over http "?" starts a query)
    }
    for rel, expected in cases.items():
        local = open_dataset(str(data / rel.rstrip("/")))
        ds = open_dataset(f"{srv.url}/{rel}")
        assert ds.format == local.format and ds.shape == local.shape and ds.dtype == local.dtype, rel
        assert scales(ds) == scales(local) and ds.offset == local.offset, rel
        assert np.array_equal(read(ds), expected), rel
    srv.settle()
    # The files were read in parts, never fetched whole.
    assert srv.requested(r"GET /map\.mrc ") and srv.requested(r"GET /vol\.h5 ")
    assert all(" 206 " in line for line in srv.requested(r"GET /(map\.mrc|vol\.h5|cells\.ome\.tif) "))
