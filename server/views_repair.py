"""``/-/n5/<path>/`` and ``/-/zarr/<path>/``: the dataset at ``<path>`` with repaired metadata.

Metadata files (``attributes.json``; ``.zarray``, ``.zattrs``, ``zarr.json``) are read
through the mount's storage and answered with what the presenters in ``volumes``
make of them: small JSON, an ETag derived from every file read, ``no-cache``, and
conditional requests honoured.  Everything else (chunks, listings, redirects) is the
raw data route's answer, so Range, HEAD, validators, gzip_static and remote mounts
behave exactly as they do there.

The auth middleware has authorized the requested path.  The presenters also read
other files (ancestors' attributes, sibling levels); each is read only if this
request may read it, so a view never says more than the raw route would.
"""

from __future__ import annotations

import hashlib
import json

from aiohttp import web

from volumes import SourceError, first_line
from volumes.present_n5 import is_array, level_paths, present_n5
from volumes.present_zarr import (
    dataset_paths,
    needs_shapes,
    ome_version,
    present_ome,
    repair_zarr3_array,
    repair_zarray,
)

from . import auth
from .app import MOUNTS, handle_data, resolve
from .paths import is_visible
from .responses import json_response
from .routing import TARGET, serves
from .storage import Storage

METADATA = {"n5": frozenset({"attributes.json"}), "zarr": frozenset({".zarray", ".zattrs", "zarr.json"})}
PRESENTER_VERSION = b"1"  # bump when the presenters change what they make of the same files


class MetadataInputs:
    """The metadata files one answer is made of: read through the storage when this request
    may read them, and remembered for the ETag."""

    def __init__(self, request: web.Request, storage: Storage) -> None:
        self.request, self.storage = request, storage
        self.mount = auth.mount_of(request.app[MOUNTS], request[TARGET].segments)[0]
        self.digest = hashlib.sha256(PRESENTER_VERSION)
        self._ident = None

    async def _may_read(self, path: str) -> bool:
        authority = self.request.app[auth.AUTHORITY]
        spec = authority.mounts.get(self.mount)
        if spec is None or spec.access == "public":
            return True
        if self._ident is None:
            self._ident = await authority.identify(self.request)
        return authority.allows(self._ident, self.mount, path)

    async def json(self, parts: list[str], name: str):
        """The parsed JSON file ``name`` in folder ``parts``; None when absent or not ours to read."""
        path = "/".join([*parts, name])
        data = await self.storage.read_small(path) if await self._may_read(path) else None
        self.digest.update(b"\0%d:%s\0" % (len(path), path.encode()) + (b"-" if data is None else b"+" + data))
        if data is None:
            return None
        try:
            return json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: nested past json's limit, no metadata is
            raise SourceError(f"{name} in /{'/'.join(parts)} is not valid JSON") from None

    async def folders(self, parts: list[str]) -> list[str]:
        entries = await self.storage.list_dir("/".join(parts)) if await self._may_read("/".join(parts)) else None
        names = [e.name for e in entries or [] if e.is_dir]
        self.digest.update(b"\0dir:" + "/".join(names).encode())
        return names

    def etag(self) -> str:
        return f'"v-{self.digest.hexdigest()[:32]}"'


def _relative(path: str) -> list[str] | None:
    """A level path from metadata as folder segments, or None if it would leave the folder."""
    parts = path.split("/")
    if all(p and p not in (".", "..") and is_visible(p) and "\\" not in p and "\x00" not in p for p in parts):
        return parts
    return None


async def _levels(inputs: MetadataInputs, group_dir: list[str], group: dict, known: dict[str, dict]) -> list[tuple[str, dict]] | None:
    """The (path, attributes) of an N5 multiscale group's levels, or None if it is none."""
    paths = level_paths(group) or level_paths(group, await inputs.folders(group_dir))
    levels = []
    for p in paths:
        parts = _relative(p)
        if parts is None:
            raise SourceError(f"N5 multiscale level path {p!r} leaves the group")
        attrs = known[p] if p in known else await inputs.json([*group_dir, *parts], "attributes.json")
        if not isinstance(attrs, dict):
            return None  # s0… folders that are not arrays: a plain group
        levels.append((p, attrs))
    return levels or None


async def _present_n5(inputs: MetadataInputs, folder: list[str]) -> dict | None:
    chain = [await inputs.json(folder[:i], "attributes.json") for i in range(len(folder) + 1)]
    node = chain[-1]
    if node is None:
        return None
    if not isinstance(node, dict):
        raise SourceError(f"attributes.json in /{'/'.join(folder)} is not a JSON object")
    chain = [c if isinstance(c, dict) else None for c in chain]
    levels = level = None
    if not is_array(node):
        levels = await _levels(inputs, folder, node, {})
    elif folder and isinstance(chain[-2], dict) and not is_array(chain[-2]):
        siblings = await _levels(inputs, folder[:-1], chain[-2], {folder[-1]: node})
        if siblings and folder[-1] in [p for p, _ in siblings]:
            levels, level = siblings, folder[-1]
    return present_n5(chain, levels, level).attributes


async def _ome_level_version(inputs: MetadataInputs, folder: list[str]) -> str | None:
    """The OME version of the nearest ancestor group that lists the array at ``folder`` as a level."""
    for i in range(len(folder) - 1, -1, -1):
        attrs = await inputs.json(folder[:i], ".zattrs")
        version = ome_version(attrs) if isinstance(attrs, dict) else None
        if version is not None:
            return version if "/".join(folder[i:]) in dataset_paths(attrs) else None
    return None


async def _present_zarr(inputs: MetadataInputs, folder: list[str], name: str) -> dict | None:
    raw = await inputs.json(folder, name)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SourceError(f"{name} in /{'/'.join(folder)} is not a JSON object")
    if name == ".zarray":
        return repair_zarray(raw, await _ome_level_version(inputs, folder))
    if name == "zarr.json":
        if raw.get("node_type") == "array":
            return repair_zarr3_array(raw)
        attrs = raw.get("attributes")
        return {**raw, "attributes": present_ome(attrs, 3).attributes} if isinstance(attrs, dict) else raw
    shapes = None
    if needs_shapes(ome_version(raw)):
        shapes = {}
        for p in dataset_paths(raw):
            parts = _relative(p)
            if parts is None:
                raise SourceError(f"OME level path {p!r} leaves the group")
            meta = await inputs.json([*folder, *parts], ".zarray")
            if isinstance(meta, dict) and isinstance(meta.get("shape"), list):
                shapes[p] = meta["shape"]
    return present_ome(raw, 2, shapes).attributes


@serves("view")
async def handle_repaired(request: web.Request) -> web.StreamResponse:
    """A metadata file of the view, repaired; anything else exactly as the raw route serves it."""
    target = request[TARGET]
    segments = target.segments
    if not segments or target.raw.endswith("/") or segments[-1] not in METADATA[target.view]:
        return await handle_data(request)
    storage, inner = resolve(request, segments)
    if not inner:
        raise web.HTTPNotFound()
    inputs = MetadataInputs(request, storage)
    folder, name = inner[:-1], inner[-1]
    try:
        if target.view == "n5":
            body = await _present_n5(inputs, folder)
        else:
            body = await _present_zarr(inputs, folder, name)
    except SourceError as exc:
        raise web.HTTPUnprocessableEntity(
            text=f"cannot present /{'/'.join(segments)} as {target.view}: {first_line(exc)}\n"
        ) from None
    if body is None:
        raise web.HTTPNotFound()
    return await json_response(request, name, body, inputs.etag())


def add_routes(app: web.Application) -> None:
    """Register before the generic data routes, which would otherwise match these paths."""
    app.router.add_get("/-/{view:zarr|n5}/{path:.*}", handle_repaired)
    app.router.add_get("/-/t/{token}/-/{view:zarr|n5}/{path:.*}", handle_repaired)
