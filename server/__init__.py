"""ngserve's HTTP daemon: serve folders and stores to Neuroglancer."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["create_app", "ConfigError", "MountConfig", "ServerConfig"]

# Loaded on first use (PEP 562): the CLI imports this package for every subcommand, and those that
# serve nothing (annotate, link, token) should not pay ~0.2 s for aiohttp.
_LAZY = {"create_app": "app", "ConfigError": "config", "MountConfig": "config", "ServerConfig": "config"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
