"""Where "open in viewer" on an N5 container group leads: the first dataset inside it.

An N5 root (``{"n5": "2.x"}``) or any group that is neither an array nor a multiscale group
has nothing the viewer can show itself, but its datasets sit a few folders below.
"""

from __future__ import annotations

import json

from volumes.present_n5 import is_array, level_paths

from .storage import Storage

MAX_DEPTH = 4  # datasets sit a few groups down (container/em/fibsem-uint8); chunk trees are deeper
MAX_FOLDERS = 64  # folders examined at most, so a huge container costs a bounded number of listings


async def is_n5_container(storage: Storage, path: str) -> bool:
    """Whether the N5 group at ``path`` is neither an array nor a multiscale group."""
    raw = await storage.read_small(f"{path}/attributes.json" if path else "attributes.json")
    try:
        attrs = json.loads(raw) if raw is not None else None
    except ValueError:
        return False  # a broken file: the builder's own error says so
    if not isinstance(attrs, dict) or is_array(attrs):
        return False
    entries = await storage.list_dir(path) or []
    return not level_paths(attrs, [e.name for e in entries if e.is_dir])


async def first_dataset(storage: Storage, path: str) -> str | None:
    """The path below ``path`` of the first dataset (breadth first, by name) that is not itself an
    N5 container group; None when there is none within :data:`MAX_DEPTH` and :data:`MAX_FOLDERS`."""
    queue = [(path, 0)]
    seen = 0
    while queue and seen < MAX_FOLDERS:
        folder, depth = queue.pop(0)
        seen += 1
        if folder != path and await storage.dataset_format(folder) is not None \
                and not await is_n5_container(storage, folder):
            return folder[len(path):].strip("/")
        if depth < MAX_DEPTH:
            entries = await storage.list_dir(folder) or []
            queue += [(f"{folder}/{e.name}" if folder else e.name, depth + 1) for e in entries if e.is_dir]
    return None
