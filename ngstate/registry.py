"""Running ngserve servers, found through a small registry in the data dir.

Each ``ngserve serve`` process writes ``servers/<pid>.json`` (its URL, the local folder of
each public mount, its start time) when it has bound its port, and removes it at exit.  One
file per process, written by rename, needs no lock: readers never see half an entry.  A
process killed hard leaves its file behind, so readers trust an entry only while its pid is
alive and its ``/-/health`` answers; they delete the files of dead pids.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Mapping

HEALTH_TIMEOUT = 0.5  # seconds: a local server answers at once; a hung one must not stall a link
_FOLDER = "servers"


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/ngserve``, else ``~/.local/share/ngserve``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "ngserve"


def _folder(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir or default_data_dir()).expanduser() / _FOLDER


def register(
    url: str, mounts: Mapping[str, str], data_dir: str | os.PathLike | None = None, health_url: str | None = None
) -> Path:
    """Record this process as serving ``mounts`` (mount name -> local folder) at ``url``; the entry's path.

    ``health_url`` is where this machine reaches the server, when ``url`` is a public one.
    """
    folder = _folder(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    entry = {
        "pid": os.getpid(),
        "url": url.rstrip("/"),
        "health": (health_url or url).rstrip("/"),
        "mounts": {name: str(Path(path).expanduser().resolve()) for name, path in mounts.items()},
        "started": time.time(),
    }
    path = folder / f"{os.getpid()}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def unregister(path: Path) -> None:
    path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def _healthy(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url + "/-/health", timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def running(data_dir: str | os.PathLike | None = None, timeout: float = HEALTH_TIMEOUT) -> list[dict]:
    """The live servers, oldest first: entries whose pid runs and whose ``/-/health`` answers."""
    folder = _folder(data_dir)
    found = []
    for path in sorted(folder.glob("[0-9]*.json")) if folder.is_dir() else []:
        try:
            entry = json.loads(path.read_text())
            pid, url, mounts = int(entry["pid"]), str(entry["url"]), dict(entry["mounts"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # removed meanwhile, or not ours: leave it
        if not _alive(pid):
            path.unlink(missing_ok=True)  # its process is gone for good
            continue
        if _healthy(str(entry.get("health") or url), timeout):  # a server still starting or hung is skipped, not deleted
            found.append({**entry, "pid": pid, "url": url, "mounts": mounts})
    return sorted(found, key=lambda e: e.get("started", 0))


def serving_url(path: str | os.PathLike, servers: list[dict]) -> str | None:
    """The URL at which one of ``servers`` serves local ``path`` (the deepest mount wins), else None."""
    from urllib.parse import quote

    target = str(Path(path).expanduser().resolve())
    best: tuple[int, str] | None = None
    for server in servers:
        for name, folder in server["mounts"].items():
            if target == folder or target.startswith(folder.rstrip("/") + "/"):
                rel = target[len(folder):].strip("/")
                url = server["url"] + ("/" + quote(name) if name else "")
                url += "/" + "/".join(quote(p) for p in rel.split("/")) if rel else ""
                if best is None or len(folder) > best[0]:
                    best = (len(folder), url)
    return best[1] if best else None
