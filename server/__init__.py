"""ngserve's HTTP daemon: serve folders and stores to Neuroglancer."""

from .app import create_app
from .config import ConfigError, MountConfig, ServerConfig

__all__ = ["create_app", "ConfigError", "MountConfig", "ServerConfig"]
