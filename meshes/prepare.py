"""What ``ngserve mesh`` and ``ngserve skeleton`` share apart from the data: their one-line
errors, ``--segments``, and where the output goes so that Neuroglancer (through ngstate) finds it.

Precomputed labels name a mesh or skeletons in their own ``info`` (``"mesh"``/``"skeletons"``: a
sub-folder); any other labels get a folder beside them, ``<labels>.mesh`` / ``<labels>.skeletons``,
which :func:`prepared_folder` finds and ngstate attaches as one more source of the layer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from volumes import Dataset, SourceError, first_line, open_dataset
from volumes.convert_stores import write_json

from .pyramid import LabelPyramid


class PrepareError(ValueError):
    """A problem the user can fix, as one line (bad input, bad option, existing output)."""


def parse_segments(text: str | None) -> np.ndarray | None:
    """``--segments 1,2,5`` as sorted unique uint64 ids (None: every segment)."""
    if text is None:
        return None
    ids = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise PrepareError(f"--segments: {part!r} is not a segment id; give ids such as 1,2,5") from None
        if not 0 < value < 2**64:
            raise PrepareError(f"--segments: {part} is not a segment id (1 to 2^64-1; 0 is background)")
        ids.append(value)
    if not ids:
        raise PrepareError("--segments: no ids given; give ids such as 1,2,5")
    return np.unique(np.array(ids, dtype=np.uint64))


SUFFIXES = {"mesh": ".mesh", "skeletons": ".skeletons"}
TYPES = {"mesh": "neuroglancer_multilod_draco", "skeletons": "neuroglancer_skeletons"}


def open_labels(source: str | os.PathLike) -> tuple[Dataset, LabelPyramid]:
    """The dataset at ``source`` and its label pyramid; PrepareError (one line) when it has none."""
    try:
        ds = open_dataset(source)
        return ds, LabelPyramid.from_dataset(ds)
    except SourceError as exc:  # MeshError (not labels) and unreadable sources alike
        raise PrepareError(first_line(exc)) from None


def default_output(ds: Dataset, kind: str) -> Path:
    """``<labels>/<kind>`` inside local precomputed labels, else the folder beside the labels."""
    location = ds.location
    if location.is_http:
        raise PrepareError(f"{location}: the labels are remote; give the OUTPUT folder")
    root = Path(location.root)
    if ds.format == "precomputed":
        return root / kind
    return root.with_name(root.name + SUFFIXES[kind])


def prepare_output(ds: Dataset, output: str | os.PathLike | None, kind: str, *, overwrite: bool,
                   resume: bool) -> Path:
    """The output folder, refused in one line when it exists and neither ``--overwrite`` nor ``--resume`` is given."""
    path = Path(output).expanduser().resolve() if output else default_output(ds, kind)
    if path.exists() and not (overwrite or resume):
        raise PrepareError(f"{path}: already exists; give --overwrite to replace it (or --resume to finish it)")
    return path  # an existing one is replaced only when the new one is complete (volumes.building)


def attach_to_info(ds: Dataset, output: Path, kind: str) -> bool:
    """Name ``output`` in the precomputed labels' ``info`` when it is a sub-folder of them
    (written atomically); whether it was."""
    location = ds.location
    if ds.format != "precomputed" or location.is_http or output.parent != Path(location.root):
        return False
    info_path = Path(location.root) / "info"
    info = json.loads(info_path.read_text())
    if info.get(kind) != output.name:
        info[kind] = output.name
        write_json(info_path, info)
    return True


def prepared_folder(root: str, kind: str) -> Path | None:
    """The finished ``<root><suffix>`` folder of ``kind`` beside local labels at ``root``, if any
    (its ``info`` is written last, so an interrupted run is not found)."""
    folder = Path(root.rstrip("/") + SUFFIXES[kind])
    try:
        info = json.loads((folder / "info").read_text())
    except (OSError, ValueError):
        return None
    return folder if isinstance(info, dict) and info.get("@type") == TYPES[kind] else None
