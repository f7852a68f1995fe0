"""Every error names its source; tensorstore's spec dumps stay out of the line and go to --verbose."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from test_open import get

from volumes import first_line
from volumes.write import write_zarr_array

SPEC_DUMP = "tensorstore_spec"


def ngserve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *args], capture_output=True, text=True, timeout=120)


def write_sources(root) -> None:
    """``good.zarr``, and ``odd.zarr`` whose compressor tensorstore does not know: its error carries the spec."""
    for name in ("good.zarr", "odd.zarr"):
        write_zarr_array(root / name, np.ones((40, 40), np.float32))
    meta = json.loads((root / "odd.zarr" / ".zarray").read_text())
    meta["compressor"] = {"id": "lzma"}
    (root / "odd.zarr" / ".zarray").write_text(json.dumps(meta))


def test_first_line_cuts_tensorstore_payloads():
    exc = ValueError("FAILED_PRECONDITION: Error opening \"zarr\" driver: bad [source locations='a.cc:1\nb.cc:2']"
                     " [tensorstore_spec='{\\\"driver\\\":\\\"zarr\\\",\\\"path\\\":\\\"x\\\"}']\nsecond line")
    assert first_line(exc) == 'FAILED_PRECONDITION: Error opening "zarr" driver: bad'


def test_link_names_the_failing_source_and_verbose_keeps_the_spec(tmp_path, start_server):
    write_sources(tmp_path)
    srv = start_server("serve", str(tmp_path))
    for good, odd, extra in (
        (str(tmp_path / "good.zarr"), str(tmp_path / "odd.zarr"), ["--served-at", f"{tmp_path}={srv.url}"]),
        (f"{srv.url}/good.zarr", f"{srv.url}/odd.zarr", []),
    ):
        out = ngserve("link", *extra, good, odd)
        assert out.returncode == 2, out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and SPEC_DUMP not in lines[0], out.stderr
        assert lines[0].startswith(f"ngserve link: error: {odd}: "), lines[0]
        assert "lzma" in lines[0]
        verbose = ngserve("link", "--verbose", *extra, good, odd)
        assert verbose.returncode == 2
        assert SPEC_DUMP in verbose.stderr and verbose.stderr.strip().splitlines()[-1] == lines[0], verbose.stderr


def test_inspect_line_and_verbose(tmp_path):
    write_sources(tmp_path)
    out = ngserve("inspect", str(tmp_path / "odd.zarr"))
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert str(tmp_path / "odd.zarr") in line and "lzma" in line and SPEC_DUMP not in line, line
    verbose = ngserve("inspect", "--verbose", str(tmp_path / "odd.zarr"))
    assert SPEC_DUMP in verbose.stderr and verbose.stderr.strip().splitlines()[-1] == line


def test_open_answers_one_line_naming_the_path_once(tmp_path, start_server):
    write_sources(tmp_path)
    srv = start_server("serve", str(tmp_path))
    status, _, body = get(f"{srv.url}/-/open/odd.zarr")
    assert status == 422
    assert body.startswith("cannot show /odd.zarr: ") and body.count("\n") == 1, body
    assert SPEC_DUMP not in body and "/odd.zarr: /odd.zarr" not in body and "lzma" in body, body
