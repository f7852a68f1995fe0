"""A synthetic dataset of every format ngserve knows, each with non-trivial metadata.

Tests, demos and benchmarks share these so that every reader and the state
builder meet anisotropic voxels, non-zero offsets, micrometre units, narrow
uint16 ranges, uint64 labels and channels.  Data: blobs plus noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .synthetic import blobs
from .write import add_labels_group, write_n5, write_ome_zarr, write_precomputed, write_zarr_array

SHAPE = (20, 45, 70)  # z, y, x: odd sizes that do not divide into chunks


def narrow_uint16(image: np.ndarray) -> np.ndarray:
    """uint16 in about [1000, 1400]: black under Neuroglancer's default full-range contrast."""
    return (1000 + image * 400).astype(np.uint16)


def write_samples(folder: str | Path) -> dict[str, Path]:
    """Write every sample below ``folder``; name -> path."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    image, labels = blobs(SHAPE, n_blobs=12, seed=3)
    u16 = narrow_uint16(image)
    out: dict[str, Path] = {}

    # OME-Zarr 0.4: anisotropic micrometre voxels, an offset, a labels/ image.
    p = out["ome04"] = root / "cells.ome.zarr"
    write_ome_zarr(p, u16, voxel_size=(0.5, 0.25, 0.2), translation=(2.0, 1.0, 3.0), levels=3, chunks=(16, 32, 32))
    out["ome04_labels"] = add_labels_group(p, ["nuclei"]) / "nuclei"
    write_ome_zarr(out["ome04_labels"], labels, voxel_size=(0.5, 0.25, 0.2), translation=(2.0, 1.0, 3.0),
                   levels=3, method="mode", label=True, chunks=(16, 32, 32))
    # OME-Zarr 0.5 (zarr v3): two channels with omero windows.
    p = out["ome05"] = root / "twochannel.ome.zarr"
    channels = np.stack([u16, (image[::-1] * 800 + 50).astype(np.uint16)])
    write_ome_zarr(p, channels, axes=("c", "z", "y", "x"), voxel_size=(1, 1.0, 0.4, 0.4), levels=2,
                   zarr_version=3, windows=[(1000, 1300), (50, 700)])
    # Plain zarr: v2 float32 without names, v3 labels with names, v2 uint64.
    write_zarr_array(out.setdefault("zarr2", root / "raw.zarr"), image.astype(np.float32) * 3 - 1)
    write_zarr_array(out.setdefault("zarr3_seg", root / "cells_seg.zarr"), labels, zarr_version=3,
                     dimension_names=("z", "y", "x"))
    write_zarr_array(out.setdefault("zarr2_u64", root / "ids.zarr"), labels.astype(np.uint64) * 1000003)
    # N5, in each metadata convention (nm).
    u8 = (image * 255).astype(np.uint8)
    write_n5(out.setdefault("n5_ng", root / "ng.n5"), u8, convention="neuroglancer", voxel_size_xyz=(4, 4, 40))
    write_n5(out.setdefault("n5_viewer", root / "viewer.n5"), u8, convention="n5-viewer", voxel_size_xyz=(8, 8, 30))
    write_n5(out.setdefault("n5_cosem", root / "cosem.n5"), u8, convention="cosem", voxel_size_xyz=(4, 4, 4),
             translate_xyz=(100, 200, 300))
    # Precomputed: an unsharded image with an offset, a sharded uint64 segmentation.
    write_precomputed(out.setdefault("pc_image", root / "pc_image"), u16, resolution_xyz=(8, 8, 40),
                      voxel_offset_xyz=(10, 20, 5))
    write_precomputed(out.setdefault("pc_seg", root / "pc_seg"), labels.astype(np.uint64), resolution_xyz=(8, 8, 40),
                      voxel_offset_xyz=(10, 20, 5), kind="segmentation", sharded=True,
                      encoding="compressed_segmentation", extra_info={"mesh": "mesh"})
    write_annotation_points(out.setdefault("points", root / "points"), labels, offset_xyz=(10, 20, 5))
    return out


def write_annotation_points(path: Path, labels: np.ndarray, offset_xyz=(0, 0, 0), n: int = 40) -> None:
    """Points inside labelled voxels, related to their segment ("cell"), with Neuroglancer's writer."""
    import neuroglancer
    from neuroglancer.write_annotations import AnnotationWriter

    space = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[8, 8, 40])
    writer = AnnotationWriter(
        space, "point", relationships=["cell"],
        properties=[neuroglancer.AnnotationPropertySpec(id="score", type="float32")],
    )
    rng = np.random.default_rng(5)
    zyx = np.argwhere(labels > 0)
    for z, y, x in zyx[rng.choice(len(zyx), size=min(n, len(zyx)), replace=False)]:
        point = [x + offset_xyz[0] + 0.5, y + offset_xyz[1] + 0.5, z + offset_xyz[2] + 0.5]
        writer.add_point(point, score=float(rng.uniform()), cell=[int(labels[z, y, x])])
    writer.write(path)
