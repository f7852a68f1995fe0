"""``ngserve skeleton``: kimimaro skeletons in the precomputed skeleton format, decoded here with
the test's own reader and checked against the labels."""

from __future__ import annotations

import numpy as np
import pytest

from label_data import BIG, OFFSET_XYZ, VOXEL_XYZ, cli, decode_skeleton, read_info, shapes, write_precomputed, write_zarr


def _check_inside(folder, lab, offset_xyz, names=("7", str(BIG), "12")):
    """Every vertex (nanometres, the model space) lies in a voxel of its own segment."""
    info = read_info(folder)
    assert info["@type"] == "neuroglancer_skeletons"
    assert info["transform"] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    xyz = lab.transpose(2, 1, 0)
    for name in names:
        vertices, edges, radii = decode_skeleton((folder / name).read_bytes())
        assert len(vertices) > 3 and len(edges) == len(vertices) - 1  # one tree per compact segment
        assert edges.max() < len(vertices) and (radii > 0).all()
        voxel = np.floor(vertices / np.array(VOXEL_XYZ) - np.array(offset_xyz)).astype(int)
        assert (voxel >= 0).all() and (voxel < np.array(xyz.shape)).all()
        assert (xyz[tuple(voxel.T)] == np.uint64(int(name))).all(), name
    tube, _, _ = decode_skeleton((folder / "12").read_bytes())
    assert np.ptp(tube[:, 0]) > 55 * VOXEL_XYZ[0]  # the tube's skeleton runs along it


def test_zarr_labels_get_skeletons_beside_them(tmp_path):
    lab = shapes()
    labels = write_zarr(tmp_path / "cells.zarr", lab)
    r = cli("skeleton", labels, "--dust", "100")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "cells.zarr.skeletons"
    assert r.stdout.startswith(f"{out}: 4 skeletons from level 0")
    _check_inside(out, lab, (0, 0, 0), names=("7", str(BIG), "12", "5"))


def test_precomputed_labels_name_them_in_their_info(tmp_path):
    lab = shapes()
    labels = write_precomputed(tmp_path / "seg", lab)
    r = cli("skeleton", labels, "--segments", f"7,{BIG},12")
    assert r.returncode == 0, r.stderr
    assert read_info(labels)["skeletons"] == "skeletons"
    _check_inside(labels / "skeletons", lab, OFFSET_XYZ)
    assert not (labels / "skeletons" / "5").exists()  # not asked for


@pytest.mark.parametrize("args, message", [
    (["--segments", "1,x"], "--segments: 'x' is not a segment id"),
    (["--segments", "99"], "--segments: 99 not in"),
    (["--level", "5"], "--level 5: the labels have levels 0 to 1"),
])
def test_bad_options_are_one_line(tmp_path, args, message):
    labels = write_zarr(tmp_path / "cells.zarr", shapes())
    r = cli("skeleton", labels, *args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_image_and_existing_output_are_refused(tmp_path):
    from volumes import write_ome_zarr

    image = tmp_path / "image.zarr"
    write_ome_zarr(image, np.zeros((8, 8, 8), np.float32), levels=1)
    r = cli("skeleton", image)
    assert r.returncode == 2 and "image data has no segments" in r.stderr and r.stderr.count("\n") == 1
    labels = write_zarr(tmp_path / "cells.zarr", shapes())
    (tmp_path / "cells.zarr.skeletons").mkdir()
    r = cli("skeleton", labels)
    assert r.returncode == 2 and "already exists; give --overwrite" in r.stderr, r.stderr
    r = cli("skeleton", labels, "--overwrite", "--dust", "100")
    assert r.returncode == 0 and read_info(tmp_path / "cells.zarr.skeletons")["@type"] == "neuroglancer_skeletons"
