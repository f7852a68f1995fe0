"""Where prepared meshes and skeletons go, so that Neuroglancer (through ngstate) finds them.

Precomputed labels name them in their own ``info`` (``"mesh"``/``"skeletons"``: a sub-folder);
any other labels get a folder beside them, ``<labels>.mesh`` / ``<labels>.skeletons``, which
:func:`prepared_folder` finds and ngstate attaches as one more source of the layer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from volumes.convert_stores import write_json

from .labels import LabelVolume, PrepareError

SUFFIXES = {"mesh": ".mesh", "skeletons": ".skeletons"}
TYPES = {"mesh": "neuroglancer_multilod_draco", "skeletons": "neuroglancer_skeletons"}


def default_output(volume: LabelVolume, kind: str) -> Path:
    """``<labels>/<kind>`` inside local precomputed labels, else the folder beside the labels."""
    location = volume.dataset.location
    if location.is_http:
        raise PrepareError(f"{location}: the labels are remote; give the OUTPUT folder")
    root = Path(location.root)
    if volume.dataset.format == "precomputed":
        return root / kind
    return root.with_name(root.name + SUFFIXES[kind])


def prepare_output(volume: LabelVolume, output: str | os.PathLike | None, kind: str, *, overwrite: bool,
                   resume: bool) -> Path:
    """The output folder, refused in one line when it exists and neither ``--overwrite`` nor ``--resume`` is given."""
    path = Path(output).expanduser().resolve() if output else default_output(volume, kind)
    if path.exists() and not (overwrite or resume):
        raise PrepareError(f"{path}: already exists; give --overwrite to replace it (or --resume to finish it)")
    return path  # an existing one is replaced only when the new one is complete (volumes.building)


def attach_to_info(volume: LabelVolume, output: Path, kind: str) -> bool:
    """Name ``output`` in the precomputed labels' ``info`` when it is a sub-folder of them
    (written atomically); whether it was."""
    location = volume.dataset.location
    if volume.dataset.format != "precomputed" or location.is_http or output.parent != Path(location.root):
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
