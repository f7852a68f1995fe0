"""The deployment config file: keys, secrets from env/files, CLI precedence, one-line errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import build_parser
from server.commands.serve import config_from_args
from server.config import ConfigError
from server.config_file import CLI_KEYS, load_config
from server.passwords import verify_password

HASH = "scrypt$n=1024,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "secret").write_text("s" * 40 + "\n")
    path = tmp_path / "ngserve.toml"
    path.write_text(text)
    return path


FULL = f"""
[server]
host = "0.0.0.0"
port = 8123
workers = 3
public_url = "https://ng.example.org"
data_dir = "state"
cors_origins = ["https://neuroglancer-demo.appspot.com"]
access_log = false

[auth]
secret_file = "secret"
session_ttl = "8h"
trusted_proxies = ["10.0.0.0/8"]

[[mounts]]
name = "local"
source = "data"

[[mounts]]
name = "dcache"
source = "webdav+https://dcache.example.org:2880/pnfs/example.org/data/"
access = "users"
users = ["alice"]
[mounts.upstream]
bearer_env = "TEST_MACAROON"
read_timeout = "45s"
chunk_cache_bytes = "256MiB"
metadata_max_bytes = "8MiB"
redirect_hosts = ["pool1.example.org", "POOL2.example.org:2880"]

[[users]]
name = "alice"
password_hash = "{HASH}"
"""


def serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_full_config_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_MACAROON", "MDAxY2xvY2F0aW9uIE9wdGlvbmFs")
    c = load_config(write(tmp_path, FULL))
    assert (c.host, c.port, c.workers, c.public_url) == ("0.0.0.0", 8123, 3, "https://ng.example.org")
    assert c.data_dir == tmp_path / "state" and not c.access_log
    assert c.cors_origins == ["https://neuroglancer-demo.appspot.com"]
    assert c.auth.secret == b"s" * 40 and c.auth.session_ttl == 8 * 3600 and c.auth.trusted_proxies == ["10.0.0.0/8"]
    local, dcache = c.mounts
    assert local.source == str((tmp_path / "data").resolve()) and local.access == "public"
    assert dcache.access == "users" and dcache.users == ["alice"]
    assert dcache.upstream.bearer == "MDAxY2xvY2F0aW9uIE9wdGlvbmFs"
    assert dcache.upstream.read_timeout == 45 and dcache.upstream.chunk_cache_bytes == 256 << 20
    assert dcache.upstream.metadata_max_bytes == 8 << 20 and dcache.upstream.listing_max_bytes == 64 << 20
    assert dcache.upstream.redirect_hosts == ["pool1.example.org", "POOL2.example.org:2880"]
    assert local.upstream.metadata_max_bytes == 16 << 20 and local.upstream.redirect_hosts == []
    assert "MDAxY2xvY2F0aW9uIE9wdGlvbmFs" not in repr(c) and "sss" not in repr(c)
    c.validate()


def test_cli_flags_win_over_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_MACAROON", "m")
    path = write(tmp_path, FULL)
    other = tmp_path / "other"
    other.mkdir()
    c = config_from_args(serve_args("--config", str(path), "--port", "0", "--host", "127.0.0.1", "--workers", "1",
                                    "--cors-origin", "*", "--public-url", "http://x", "--quiet",
                                    "--mount", f"local={other}"), None)
    assert (c.port, c.host, c.workers, c.cors_origins, c.public_url) == (0, "127.0.0.1", 1, ["*"], "http://x")
    assert not c.access_log
    assert [m.name for m in c.mounts] == ["dcache", "local"] and c.mounts[1].source == str(other)
    c = config_from_args(serve_args("--config", str(path)), None)
    assert (c.port, c.workers) == (8123, 3)  # unset flags leave the file's values


def test_frame_ancestors_from_file_and_flag(tmp_path):
    path = write(tmp_path, '[server]\nframe_ancestors = ["self", "https://jupyter.example.org"]\n'
                           'states_max_bytes = "2MiB"\nstates_per_minute = 6\n[[mounts]]\nname = "a"\nsource = "data"\n')
    c = config_from_args(serve_args("--config", str(path)), None)
    assert c.frame_ancestors == ["'self'", "https://jupyter.example.org"]
    assert (c.states_max_bytes, c.states_per_minute, c.states_burst) == (2 << 20, 6, 10)
    c = config_from_args(serve_args("--config", str(path), "--frame-ancestor", "*"), None)
    assert c.frame_ancestors == ["*"]


def test_every_serve_flag_has_a_config_key():
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    dests = {a.dest for a in serve._actions if a.dest != "help"}
    assert dests <= set(CLI_KEYS), f"flags without a config key: {dests - set(CLI_KEYS)}"


@pytest.mark.parametrize(
    "text, message",
    [
        ('[server]\nprot = 1\n', "server.prot: unknown key"),
        ('[server]\nport = "80"\n', "server.port: expected int"),
        ('[[mounts]]\nname = "a"\nsource = "webdav+https://h/"\n[mounts.upstream]\npassword = "hunter2"\n',
         "mounts[0].upstream.password: secrets are not written in the config file; use password_env or password_file"),
        ('[auth]\nsecret = "abc"\n', "auth.secret: secrets are not written"),
        ('[[mounts]]\nname = "a"\nsource = "webdav+https://h/"\n[mounts.upstream]\nusername = "u"\n'
         'password_env = "NGSERVE_TEST_UNSET_VAR"\n', "mounts[0].upstream.password_env: environment variable"),
        ('[[mounts]]\nname = "a"\nsource = "data"\naccess = "friends"\n', "mounts[0].access: 'friends' is not one of"),
        ('[[mounts]]\nname = "a"\nsource = "missing"\n', "mounts[0].source:"),
        ('[[mounts]]\nname = "a"\nsource = "webdav+https://u:p@h/"\n', "credentials do not belong in the URL"),
        ('[auth]\nsession_ttl = "forever"\n', "auth.session_ttl: 'forever' is not a duration"),
        # NaN and inf were taken: every sign-in then failed at int(now + ttl) (found by Hypothesis).
        ('[auth]\nsession_ttl = nan\n', "auth.session_ttl: 'nan' is not a positive duration under 1000 years"),
        ('[auth]\nsession_ttl = inf\n', "auth.session_ttl: 'inf' is not a positive duration under 1000 years"),
        ('[auth]\nsession_ttl = "' + "9" * 400 + '"\n', "auth.session_ttl: '9999"),
        ('[[users]]\nname = "bob"\npassword_hash = "plaintext"\n', "users[0].password_hash: expected 'scrypt$"),
        ('[[mounts]]\nname = "a"\nsource = "data"\naccess = "users"\n', "has access='users' but auth has no secret"),
        ('[auth]\nsecret_file = "secret"\n[[mounts]]\nname = "a"\nsource = "data"\naccess = "users"\n',
         "nobody could sign in"),
        ("[server\n", "not valid TOML"),
        ('[server]\nframe_ancestors = ["https://a.example; script-src *"]\n[[mounts]]\nname = "a"\nsource = "data"\n',
         "frame_ancestors: 'https://a.example; script-src *' is not a frame source"),
        ('[server]\nstates_max_bytes = "lots"\n', "server.states_max_bytes: 'lots' is not a size"),
        ('[server]\naccel_redirect = "_ngserve_files"\n',
         "server.accel_redirect: '_ngserve_files' is not a URL path prefix: use e.g. \"/_ngserve_files/\""),
        ('[server]\nstates_url = "postgresql://u:hunter2@db/ng"\n', "server.states_url: secrets are not written"),
        ('[server]\nstates_url = "postgresql://u@db:pg/ng"\n', "server.states_url: 'postgresql://u@db:pg/ng' has a port"),
        ('[server]\nstates_burst = 0\n[[mounts]]\nname = "a"\nsource = "data"\n', "states_burst at least 1"),
        ('[[mounts]]\nname = "a"\nsource = "https://h/"\n[mounts.upstream]\nredirect_hosts = ["https://pool1/"]\n',
         "mounts[0].upstream.redirect_hosts: 'https://pool1/' is not a host name: write e.g. pool1.example.org"),
        ('[[mounts]]\nname = "a"\nsource = "https://h/"\n[mounts.upstream]\nredirect_hosts = ["pool1:x"]\n',
         "mounts[0].upstream.redirect_hosts: 'pool1:x' is not a host name"),
        ('[[mounts]]\nname = "a"\nsource = "https://h/"\n[mounts.upstream]\nredirect_hosts = "pool1"\n',
         "mounts[0].upstream.redirect_hosts: expected list"),
        ('[[mounts]]\nname = "a"\nsource = "https://h/"\n[mounts.upstream]\nmetadata_max_bytes = 0\n',
         "mounts[0].upstream.metadata_max_bytes: 0 is not a positive size"),
        ('[[mounts]]\nname = "a"\nsource = "https://h/"\n[mounts.upstream]\nlisting_max_bytes = "lots"\n',
         "mounts[0].upstream.listing_max_bytes: 'lots' is not a size"),
        # Once a bare "ValueError: embedded null byte" from pathlib (found by Hypothesis).
        ('[auth]\nsecret_file = "a\\u0000b"\n', "auth.secret_file: a file name cannot contain a NUL character"),
        ('[server]\ndata_dir = "a\\u0000b"\n', "server.data_dir: a file name cannot contain a NUL character"),
        # pathlib's is_dir() raises for a name over 255 bytes rather than answer False.
        ('[[mounts]]\nname = "a"\nsource = "' + "d" * 300 + '"\n', "mounts[0].source: "),
        ('[[mounts]]\nname = "a"\nsource = "webdav+https://h/"\n[mounts.upstream]\nca_file = "' + "c" * 300 + '"\n',
         "mounts[0].upstream.ca_file: "),
    ],
)
def test_invalid_config_names_key_and_problem(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=None) as err:
        config_from_args(serve_args("--config", str(path)), None)
    assert message in str(err.value)
    r = subprocess.run([sys.executable, "-m", "server", "serve", "--config", str(path), "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "hunter2" not in r.stderr


def test_token_ttl_past_float_range_is_a_usage_error():
    r = subprocess.run([sys.executable, "-m", "server", "token", "create", "--mount", "a", "--ttl", "9" * 400],
                       capture_output=True, text=True, timeout=60,
                       env={**__import__("os").environ, "NGSERVE_SECRET": "0123456789abcdef0123456789abcdef"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not a positive duration" in r.stderr, r.stderr


def test_config_errors_are_one_line_even_when_they_quote_a_line_break(tmp_path):
    path = write(tmp_path, '[auth]\nsecret_env = "NGSERVE_TEST\\nUNSET"\n')
    r = subprocess.run([sys.executable, "-m", "server", "serve", "--config", str(path), "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "environment variable NGSERVE_TEST\\nUNSET is not set" in r.stderr


def test_config_that_is_not_utf8_is_a_config_error(tmp_path):
    """TOML is UTF-8; a Latin-1 file once escaped as a UnicodeDecodeError traceback (found by Hypothesis)."""
    path = tmp_path / "ngserve.toml"
    path.write_bytes('[server]\nhost = "m\u00fcnchen"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(invalid byte 0xfc at offset 18\): save it as UTF-8"):
        load_config(path)


def test_cli_mount_with_credentials_in_the_url_is_refused_like_the_file():
    r = subprocess.run([sys.executable, "-m", "server", "serve", "--mount", "d=https://u:pw-in-url-42@h.example/",
                        "--port", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--mount d: credentials do not belong in the URL" in r.stderr and "[mounts.upstream]" in r.stderr
    assert "pw-in-url-42" not in r.stderr


def test_user_add_prints_a_hash_the_config_accepts(tmp_path):
    r = subprocess.run([sys.executable, "-m", "server", "user", "add", "carol", "--password-stdin"],
                       input="carols-password\n", capture_output=True, text=True, check=True)
    assert "carols-password" not in r.stdout
    path = write(tmp_path, f'[auth]\nsecret_file = "secret"\n{r.stdout}\n[[mounts]]\nname = "a"\nsource = "data"\n'
                           'access = "users"\n')
    config = load_config(path)
    assert config.users[0].name == "carol"
    assert verify_password("carols-password", config.users[0].password_hash)
    assert not verify_password("carols-passwore", config.users[0].password_hash)
    short = subprocess.run([sys.executable, "-m", "server", "user", "add", "dan", "--password-stdin"],
                           input="short\n", capture_output=True, text=True)
    assert short.returncode == 2 and "too short" in short.stderr


def test_translated_chunk_cache_from_file(tmp_path):
    path = write(tmp_path, '[server]\ncache_dir = "chunks"\ncache_bytes = "3MiB"\n[[mounts]]\nname = "a"\nsource = "data"\n')
    c = config_from_args(serve_args("--config", str(path)), None)
    assert c.cache_dir == (tmp_path / "chunks").resolve() and c.cache_bytes == 3 << 20
    bad = write(tmp_path, '[server]\ncache_bytes = "lots"\n[[mounts]]\nname = "a"\nsource = "data"\n')
    with pytest.raises(ConfigError, match="server.cache_bytes: 'lots' is not a size"):
        config_from_args(serve_args("--config", str(bad)), None)
