"""docker-compose.yml cannot run here (no Docker engine), so check that what it relies on exists
and agrees: the replicas' command and config, the secrets, and nginx's config (checked by nginx)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from server.cli import build_parser
from server.config_file import config_from_toml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def volumes(service: str) -> dict[str, str]:
    """Container path -> host path (relative to the repository) of a service's bind mounts."""
    out = {}
    for item in SERVICES[service].get("volumes", []):
        host, container, *_ = item.split(":")
        if host.startswith("."):
            out[container] = host
    return out


def test_services_and_their_files_exist():
    assert set(SERVICES) == {"postgres", "ngserve1", "ngserve2", "nginx"}
    for name in ("ngserve1", "ngserve2"):
        service = SERVICES[name]
        assert service["build"] == "." and (REPO / "Dockerfile").is_file()
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        args = build_parser().parse_args(service["command"])  # exits (fails) on an unknown flag
        assert args.command == "serve" and args.config in volumes(name)
        assert (REPO / volumes(name)[args.config]).is_file()
    for name, secret in COMPOSE["secrets"].items():
        assert secret["file"].startswith("./deploy/") and secret["file"][2:] in (REPO / ".gitignore").read_text()
    assert "postgres" in (REPO / "Dockerfile").read_text()  # the image has psycopg for states_url


def test_replica_config_matches_postgres_secrets_and_nginx(tmp_path):
    service = SERVICES["ngserve1"]
    args = build_parser().parse_args(service["command"])
    raw = tomllib.loads((REPO / volumes("ngserve1")[args.config]).read_text())
    server = raw["server"]

    # The database: user, name and password file as the postgres service sets them up.
    env = SERVICES["postgres"]["environment"]
    assert server["states_url"] == f"postgresql://{env['POSTGRES_USER']}@postgres:5432/{env['POSTGRES_DB']}"
    pw_secret = env["POSTGRES_PASSWORD_FILE"].removeprefix("/run/secrets/")
    assert server["states_password_file"] == env["POSTGRES_PASSWORD_FILE"] and pw_secret in service["secrets"]
    assert raw["auth"]["secret_file"].removeprefix("/run/secrets/") in service["secrets"]

    # Every key is one ngserve knows: read it with the secrets and mounts moved into tmp_path.
    text = (REPO / volumes("ngserve1")[args.config]).read_text()
    for secret in COMPOSE["secrets"]:
        (tmp_path / secret).write_text("x" * 32)
        text = text.replace(f"/run/secrets/{secret}", str(tmp_path / secret))
    mount_sources = {m["source"] for m in raw["mounts"]}
    for source in mount_sources:
        assert source in volumes("ngserve1") and source in volumes("nginx")  # both see the same files
        (tmp_path / source.strip("/")).mkdir()
        text = text.replace(f'"{source}"', f'"{tmp_path / source.strip("/")}"')
    config = config_from_toml(tomllib.loads(text), tmp_path)
    assert config.states_url and config.states_password == "x" * 32 and config.accel_redirect

    nginx = (REPO / volumes("nginx")["/etc/nginx/conf.d/default.conf"]).read_text()
    for name in ("ngserve1", "ngserve2"):
        assert f"server {name}:{args.port} " in nginx
    assert "proxy_next_upstream error timeout" in nginx
    for mount in raw["mounts"]:
        assert f"location {config.accel_redirect}{mount['name']}/ {{\n        internal;\n        alias \"{mount['source']}/\";" in nginx
    # The file is what `ngserve nginx-config` prints for this config (the mounts where the containers see them).
    from server.commands.nginx_config import render

    made = render(config, [f"{name}:{args.port}" for name in ("ngserve1", "ngserve2")])
    for source in mount_sources:
        made = made.replace(str(tmp_path / source.strip("/")), source)
    assert made in nginx


def test_nginx_accepts_its_config(tmp_path):
    """``nginx -t`` on the compose file's nginx config, service names pointed at loopback."""
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = (REPO / "deploy" / "nginx-ngserve.conf").read_text()
    conf = conf.replace("ngserve1:", "127.0.0.1:").replace("ngserve2:", "127.0.0.2:").replace("listen 80;", "listen 127.0.0.1:1;")
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\naccess_log off;\nclient_body_temp_path {tmp_path};\nproxy_temp_path {tmp_path};\n{conf}\n}}\n"
    )
    done = subprocess.run([exe, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
