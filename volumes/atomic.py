"""Atomic output folders: build in a temporary sibling, then rename into place.

A failed write removes its hidden ``.NAME.partial-*`` folder; an interrupted one leaves only
that.  Neither leaves anything at ``NAME`` that looks like a finished dataset.
"""

from __future__ import annotations

import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def building(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder that replaces ``path`` when the block succeeds and is removed when it fails.

    The folder is a plain mkdir (not mkdtemp's 0700), so the result has the umask's mode and a
    server running as another user can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial-{secrets.token_hex(6)}")
    staging.mkdir()
    try:
        yield staging
        move_into_place(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def move_into_place(staging: Path, path: Path) -> None:
    """Rename ``staging`` to ``path``; an existing ``path`` is moved aside first, then deleted."""
    if not (path.exists() or path.is_symlink()):
        staging.rename(path)
        return
    old = path.with_name(f".{path.name}.old-{secrets.token_hex(6)}")
    path.rename(old)
    staging.rename(path)
    shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
