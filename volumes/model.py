"""What a dataset is, once its metadata has been read: axes, levels, placement, kind hints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .location import Location


# Stripped from a file or folder name to name the layer (longest first where one ends another).
_NAME_SUFFIXES = (".ome.zarr", ".zarr", ".n5", ".ome.tiff", ".ome.tif", ".tiff", ".tif", ".mrc", ".map",
                  ".rec", ".hdf5", ".h5", ".nii.gz", ".nii")


@dataclass
class Axis:
    """One dimension as Neuroglancer names it, with its SI unit and level-0 voxel size."""

    name: str
    unit: str = ""  # "m", "s" or "" (unitless)
    scale: float = 1.0  # size of one level-0 voxel, in ``unit``
    type: str = "space"  # "space", "time", "channel" or "other"

    @property
    def is_local(self) -> bool:
        """Channel axes are layer-local in Neuroglancer (``c'``) or channel dims (``c^``)."""
        return self.name.endswith(("'", "^"))

    def to_json(self) -> list:
        return [self.scale, self.unit]


@dataclass
class Level:
    """One resolution level; ``shape`` and ``chunks`` follow the dataset's axis order."""

    path: str  # below the dataset root; "" is the root itself
    shape: list[int]
    chunks: list[int]
    dtype: str
    factors: list[float]  # downsampling relative to level 0, per axis
    encoding: str | None = None  # precomputed encoding, zarr/n5 compressor
    spec: dict = field(default_factory=dict, repr=False)  # tensorstore spec
    fill_value: Any = 0  # as the metadata states it; None for a zarr ``fill_value: null``
    # Formats tensorstore has no driver for (TIFF, MRC, HDF5, NIfTI) build their store in Python
    # (a ``ts.virtual_chunked`` view backed by the format's library); they leave ``spec`` empty.
    opener: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    def open(self):
        """The read-only tensorstore of this level."""
        if self.opener is not None:
            return self.opener()
        import tensorstore as ts

        return ts.open(self.spec, read=True).result()


@dataclass
class Dataset:
    """A dataset found at ``location``.

    ``axes``/``offset`` are where the data truly is: ``offset`` is the lower
    corner of voxel 0 in level-0 voxels, Neuroglancer's corner convention.
    ``native_axes``/``native_offset`` are what Neuroglancer derives by itself
    from ``ng_path``; when the two differ the state must carry a transform.
    """

    location: Location
    # "ome-zarr", "zarr2", "zarr3", "n5", "precomputed", "precomputed-annotations",
    # or a format only ngserve reads: "tiff", "mrc", "hdf5", "nifti"
    format: str
    scheme: str | None  # Neuroglancer's data-source scheme; None when no Neuroglancer reads the format
    axes: list[Axis]
    offset: list[float]
    levels: list[Level]
    native_axes: list[Axis]
    native_offset: list[float]
    ng_path: str = ""  # what the layer source points at, below ``location`` (N5 may need "s0")
    version: str | None = None
    kind_hint: str | None = None  # "segmentation"/"image"/"annotation" when the metadata says so
    kind_reason: str | None = None
    windows: list[tuple[float, float]] = field(default_factory=list)  # omero, per channel
    extras: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def native(self) -> bool:
        """Whether Neuroglancer reads the source itself; if not, only a view ngserve translates shows it."""
        return self.scheme is not None

    @property
    def name(self) -> str:
        name = self.location.name
        if any(c in name for c in "*?["):  # a glob of TIFF slices: the folder names the stack
            name = self.location.root.rstrip("/").rsplit("/", 2)[-2]
        for suffix in _NAME_SUFFIXES:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                return name[: -len(suffix)]
        return name

    @property
    def dtype(self) -> str | None:
        return self.levels[0].dtype if self.levels else None

    @property
    def shape(self) -> list[int]:
        return self.levels[0].shape if self.levels else []

    def open_level(self, index: int):
        """The tensorstore of level ``index`` (read-only)."""
        return self.levels[index].open()

    def to_json(self) -> dict:
        """A plain summary, as ``ngserve inspect`` prints it."""
        physical = lambda v, a: v * a.scale  # noqa: E731
        out = {
            "source": str(self.location),
            "format": self.format,
            "version": self.version,
            "neuroglancer_source": f"{self.scheme}://{self.location.url_of(self.ng_path)}" if self.native else None,
            "axes": [{"name": a.name, "type": a.type, "unit": a.unit, "scale": a.scale} for a in self.axes],
            # Offsets are the centre of the first voxel, as OME-Zarr states them.
            "offset": [physical(o + 0.5, a) for o, a in zip(self.offset, self.axes)],
            "levels": [
                {
                    "path": lv.path,
                    "shape": lv.shape,
                    "chunks": lv.chunks,
                    "dtype": lv.dtype,
                    "voxel_size": [a.scale * f for a, f in zip(self.axes, lv.factors)],
                    "units": [a.unit for a in self.axes],
                    "offset": [physical(o + f / 2, a) for o, f, a in zip(self.offset, lv.factors, self.axes)],
                    **({"encoding": lv.encoding} if lv.encoding else {}),
                }
                for lv in self.levels
            ],
        }
        if self.windows:
            out["omero_windows"] = [list(w) for w in self.windows]
        # "_"-keys are for the other packages (e.g. all of an OME label's properties), too big to print.
        out.update({k: v for k, v in self.extras.items() if not k.startswith("_")})
        if self.notes:
            out["notes"] = self.notes
        return out
