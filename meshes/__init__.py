"""Segment meshes for Neuroglancer: the ``neuroglancer_multilod_draco`` format from any label volume.

Public API (everything else is private):

- :class:`LabelPyramid` (``LabelPyramid.from_dataset(ds)``): a label volume's
  levels as x, y, z stores in level-0 voxel coordinates; ``find(id)``.
- :func:`layout_for` -> :class:`Layout`: the octree all segments of a volume
  share (chunk shape, grid origin, pyramid level and scale per LOD).
- :func:`info_json`: the mesh source's ``info``.
- :func:`mesh_segment` -> :class:`MultiLodMesh` (``manifest`` = ``<id>.index``,
  ``data`` = ``<id>``), or None when the segment is not in the volume.
- For meshing many segments node by node: :func:`mesh_node` (every segment's
  :class:`Piece` in one octree node), :func:`encode_fragment` (a piece as a
  Draco fragment), :func:`assemble` (fragments per LOD -> manifest and data).
- :class:`MeshError`: data that cannot be meshed (one line saying why).
"""

from .multilod import (
    Layout, MultiLodMesh, Piece, assemble, encode_fragment, info_json, layout_for, mesh_node, mesh_segment, morton,
)
from .pyramid import LabelLevel, LabelPyramid, MeshError

__all__ = [
    "LabelLevel", "LabelPyramid", "Layout", "MeshError", "MultiLodMesh", "Piece", "assemble", "encode_fragment",
    "info_json", "layout_for", "mesh_node", "mesh_segment", "morton",
]
