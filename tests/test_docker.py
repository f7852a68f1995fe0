"""The Dockerfile cannot be built here (no Docker engine), so check what it relies on exists."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from server.app import create_app
from server.cli import build_parser
from server.config import MountConfig, ServerConfig

REPO = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def one(name: str) -> str:
    found = [arg for op, arg in instructions() if op == name]
    assert len(found) == 1, f"expected one {name}, got {found}"
    return found[0]


def test_base_user_and_copied_paths():
    assert re.fullmatch(r"python:3\.\d+-slim", one("FROM"))
    assert one("USER") not in ("root", "0")
    for op, arg in instructions():
        if op == "COPY":
            *sources, _ = shlex.split(arg)
            for src in sources:
                assert (REPO / src).exists(), f"COPY {src}: not in the repository"


def test_entry_command_is_the_console_script_with_valid_arguments(tmp_path):
    entry, cmd = json.loads(one("ENTRYPOINT")), json.loads(one("CMD"))
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry == ["ngserve"] and scripts["ngserve"] == "server.cli:main"
    args = build_parser().parse_args(cmd)  # exits (fails the test) on an unknown flag
    assert args.command == "serve" and args.config == "/etc/ngserve/ngserve.toml"
    assert str(args.port) == one("EXPOSE")


def test_healthcheck_asks_the_health_endpoint_on_the_exposed_port(tmp_path):
    check = one("HEALTHCHECK")
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S+?)'", check)
    assert url and url.group(1) == one("EXPOSE")
    folder = Path(__file__).parent
    app = create_app(ServerConfig(mounts=[MountConfig("", str(folder))], data_dir=tmp_path))
    routes = {getattr(r.resource, "canonical", None) for r in app.router.routes()}
    assert url.group(2) in routes
