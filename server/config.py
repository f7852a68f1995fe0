"""The server's settings, whichever way they were given (CLI flags, later a config file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A setting is wrong; the message names it and says what is expected."""


@dataclass
class MountConfig:
    name: str  # URL prefix without slashes; "" is the root
    source: str  # a local folder (later also webdav+https://..., https://...)


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9000
    mounts: list[MountConfig] = field(default_factory=list)
    workers: int = 1
    cors_origins: list[str] = field(default_factory=lambda: ["*"])
    public_url: str | None = None  # how clients reach us, when behind a proxy
    data_dir: Path | None = None  # server state (short links); default per user
    open_browser: bool = False

    def validate(self) -> None:
        if not self.mounts:
            raise ConfigError("nothing to serve: give a DIR or at least one --mount NAME=DIR")
        seen = set()
        for m in self.mounts:
            if m.name in seen:
                raise ConfigError(f"mount name {m.name!r} is used twice")
            if m.name == "-" or "/" in m.name or m.name.startswith("."):
                raise ConfigError(
                    f"mount name {m.name!r} is not allowed: use letters, digits, '_' or '-', "
                    "not '-' alone, no '/' and no leading '.'"
                )
            seen.add(m.name)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range 0-65535")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, not {self.workers}")


def parse_mount(text: str) -> MountConfig:
    """Parse ``NAME=DIR`` from the command line."""
    name, sep, source = text.partition("=")
    if not sep or not name or not source:
        raise ConfigError(f"--mount {text!r} is malformed: expected NAME=DIR, e.g. --mount em=/data/em")
    return MountConfig(name=name, source=source)
