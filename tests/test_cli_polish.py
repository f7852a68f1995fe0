"""CLI rough edges of issue 12, one test each: batch errors, plain values in messages, range
checks, parse_url without a state, annotate's summary, inspect --summary, --short's default."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

import annotations
import ngstate
from server.commands.demo import DEMO_NAME, write_demo

VIEWER = "https://viewer.example/"


def ngserve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *args], capture_output=True, text=True, timeout=180, env=env)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    (line,) = r.stderr.strip().splitlines()
    return line


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    write_demo(folder)
    return folder


def test_batch_keeps_going_and_marks_failed_rows(demo, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text(f"id,source\na,{demo / DEMO_NAME}\nb,{demo / 'missing.zarr'}\nc,\nd,{demo / DEMO_NAME}\n")
    r = ngserve("link", "--batch", str(table), "--served-at", f"{demo}=http://h:9", "--viewer", VIEWER)
    assert r.returncode == 1, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["id"] for row in rows] == ["a", "b", "c", "d"]  # the rows after a bad one are there
    assert [bool(row["url"]) for row in rows] == [True, False, False, True]
    assert rows[0]["error"] == rows[3]["error"] == ""
    assert "missing.zarr" in rows[1]["error"] and rows[2]["error"] == "no source"
    assert "line 3" in r.stderr and "line 4" in r.stderr and "2 of 4 rows failed" in r.stderr
    assert "Traceback" not in r.stderr
    assert ngstate.parse_url(rows[3]["url"])["layers"][0]["source"] == f"zarr2://http://h:9/{DEMO_NAME}/"


def test_annotate_messages_show_values_not_python(tmp_path):
    table = tmp_path / "p.csv"
    table.write_text("x,y,z\n1,2,3\n4,5,\n")
    line = one_line_error(ngserve("annotate", str(table), str(tmp_path / "out")))
    assert "coordinate nan is not a finite number" in line and "np." not in line, line
    (tmp_path / "out").mkdir()
    table.write_text("x,y,z\n1,2,3\n")
    line = one_line_error(ngserve("annotate", str(table), str(tmp_path / "out")))
    assert line.endswith("exists; pass --overwrite to replace it"), line
    with pytest.raises(annotations.AnnotationInputError, match=r"exists; pass overwrite=True to replace it$"):
        annotations.write_annotations(table, tmp_path / "out")


def test_numeric_options_are_range_checked(demo, tmp_path):
    common = ["link", str(demo / DEMO_NAME), "--served-at", f"{demo}=http://h:9", "--json", "--no-labels"]
    for bad in ("3", "-0.1", "nan"):
        line = one_line_error(ngserve(*common, f"--opacity={bad}"))
        assert "--opacity" in line and bad in line, line
    for bad in ("5,2", "1,1", "0,inf"):
        line = one_line_error(ngserve(*common, f"--contrast={bad}"))
        assert "--contrast" in line and "LO below HI" in line, line
    r = ngserve(*common, "--opacity", "0.5")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["layers"][0]["opacity"] == 0.5
    table = tmp_path / "p.csv"
    table.write_text("x,y,z\n1,2,3\n")
    assert "--limit" in one_line_error(ngserve("annotate", str(table), str(tmp_path / "o"), "--limit", "0"))
    assert "--scale" in one_line_error(ngserve("annotate", str(table), str(tmp_path / "o"), "--scale", "1,0,1"))
    assert "--size" in one_line_error(ngserve("screenshot", "x", "-o", str(tmp_path / "x.png"), "--size", "0x100"))


def test_parse_url_without_a_state_does_not_fetch(tmp_path, start_server):
    # A page that holds a valid state: the old parse_url fetched it and returned that state.
    (tmp_path / "page.json").write_text(json.dumps({"layers": []}))
    srv = start_server("serve", str(tmp_path))
    for url in (f"{srv.url}/page.json", "https://example.com/nothing", f"{srv.url}/page.json#"):
        with pytest.raises(ValueError, match="no Neuroglancer state in this URL"):
            ngstate.parse_url(url)
    srv.settle()
    assert srv.requested("page.json") == []
    assert ngstate.parse_url(f"{VIEWER}#!{srv.url}/page.json") == {"layers": []}  # a state URL is still fetched


def test_annotate_ends_with_a_summary(tmp_path):
    table = tmp_path / "p.csv"
    table.write_text("x,y,z\n" + "".join(f"{i},{i % 7},{i % 5}\n" for i in range(500)))
    r = ngserve("annotate", str(table), str(tmp_path / "out"), "--limit", "50")
    assert r.returncode == 0, r.stderr
    size = sum(f.stat().st_size for f in (tmp_path / "out").rglob("*") if f.is_file())
    levels = len(json.loads((tmp_path / "out" / "info").read_text())["spatial"])
    assert levels > 1
    assert r.stdout.strip() == (f"ngserve annotate: wrote {tmp_path / 'out'}: 500 annotations, {levels} levels, "
                                f"{size / 1e3:.1f} kB ({size:,} bytes)")


def test_inspect_summary_is_a_table(demo):
    r = ngserve("inspect", str(demo / DEMO_NAME), "--summary")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == [f"source    {demo / DEMO_NAME}", "format    ome-zarr 0.4", "layer     image (default)"]
    assert "axes      z 500 nm, y 200 nm, x 200 nm" in lines
    assert "labels    cells" in lines
    assert any(line.startswith("contrast  ") and "percentile" in line for line in lines)
    header = lines.index("level  shape           chunks        dtype   voxel size")
    assert lines[header + 1] == "0      64 x 192 x 192  64 x 64 x 64  uint16  500 x 200 x 200 nm"
    assert len(lines) == header + 4  # three levels


def test_short_defaults_to_the_server_of_every_source(demo, tmp_path, start_server):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    srv = start_server("serve", str(demo), env=env)
    r = ngserve("link", f"{srv.url}/{DEMO_NAME}", str(demo / DEMO_NAME / "labels" / "cells"), "--short", env=env)
    assert r.returncode == 0, r.stderr
    short = r.stdout.strip()
    assert short.startswith(f"{srv.url}/-/viewer/v/ngserve/#!{srv.url}/-/api/states/"), short
    layers = ngstate.parse_url(short)["layers"]
    # (the labels also get the server's on-demand meshes)
    assert [l["source"] for l in layers] == [f"zarr2://{srv.url}/{DEMO_NAME}/",
                                             [f"zarr2://{srv.url}/{DEMO_NAME}/labels/cells/",
                                              f"precomputed://{srv.url}/-/mesh/{DEMO_NAME}/labels/cells"]]
    # With a source elsewhere there is no one server to choose.
    line = one_line_error(ngserve("link", str(demo / DEMO_NAME), "--served-at", f"{demo}=http://127.0.0.1:9",
                                  "--short", env=env))
    assert "--short" in line and "name the server" in line, line
