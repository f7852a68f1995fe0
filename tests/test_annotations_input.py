"""Input tables in every format, column mapping options, and bad input: clear errors, nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from neuroglancer.read_precomputed_annotations import AnnotationReader

from annotations import AnnotationInputError, write_annotations


def small_frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "x": rng.uniform(0, 100, n),
            "y": rng.uniform(0, 50, n),
            "z": rng.uniform(0, 10, n),
            "cell_id": np.arange(100, 100 + n, dtype=np.uint64),
            "Cell Type": rng.choice(["a", "b"], n),
            "synapses": [list(rng.integers(1, 9, k)) for k in rng.integers(0, 3, n)],
        }
    )


def save(frame: pd.DataFrame, path) -> None:
    kind = path.suffix
    if kind in (".csv", ".tsv"):
        text = frame.copy()
        text["synapses"] = [";".join(map(str, v)) for v in frame["synapses"]]
        text.to_csv(path, sep="," if kind == ".csv" else "\t", index=False)
    elif kind == ".parquet":
        frame.to_parquet(path)
    elif kind == ".json":
        frame.to_json(path, orient="records")
    elif kind == ".ndjson":
        frame.to_json(path, orient="records", lines=True)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".json", ".ndjson"])
def test_every_table_format(tmp_path, suffix):
    frame = small_frame()
    path = tmp_path / f"table{suffix}"
    save(frame, path)
    out = write_annotations(
        path, tmp_path / "ann", id_column="cell_id", properties=["Cell Type"], relationships=["synapses"], seed=0
    )
    reader = AnnotationReader(f"file://{out}/")
    assert reader.metadata["properties"] == [
        {"id": "cell_Type", "type": "uint8", "enum_values": [0, 1], "enum_labels": ["a", "b"]}
    ]
    for i in (0, 17, 39):
        got = reader.by_id[100 + i]
        np.testing.assert_array_equal(got.point, frame.loc[i, ["x", "y", "z"]].to_numpy(np.float32))
        assert int(got.props[0]) == ["a", "b"].index(frame.loc[i, "Cell Type"])
        assert [int(s) for s in got.segments[0]] == [int(s) for s in frame.loc[i, "synapses"]]


def test_numpy_arrays_and_mappings(tmp_path):
    points = np.random.default_rng(1).uniform(-5, 5, (30, 3))
    out = write_annotations(points, tmp_path / "a", columns=["x", "y", "z"])
    np.testing.assert_array_equal(AnnotationReader(f"file://{out}/").by_id[4].point, points[4].astype(np.float32))
    columns = {"u": points[:, 0], "v": points[:, 1], "area": np.arange(30, dtype=np.float64)}
    out = write_annotations(columns, tmp_path / "b", columns=["u", "v"], properties=[{"column": "area", "type": "float32", "description": "µm²"}])
    reader = AnnotationReader(f"file://{out}/")
    assert list(reader.metadata["dimensions"]) == ["u", "v"]
    assert reader.metadata["properties"] == [{"id": "area", "type": "float32", "description": "µm²"}]
    assert float(reader.by_id[29].props[0]) == 29.0


def test_physical_coordinates_and_units(tmp_path):
    frame = pd.DataFrame({"x": [80.0, 160.0], "y": [8.0, 16.0], "z": [400.0, 40.0]})
    out = write_annotations(frame, tmp_path / "a", scale=[8, 8, 40], units="nm", physical=True)
    reader = AnnotationReader(f"file://{out}/")
    assert reader.metadata["dimensions"] == {"x": [8.0, "nm"], "y": [8.0, "nm"], "z": [40.0, "nm"]}
    np.testing.assert_array_equal(reader.by_id[0].point, [10, 1, 10])
    with pytest.raises(AnnotationInputError, match="unit 'parsec'"):
        write_annotations(frame, tmp_path / "b", units="parsec")


def test_explicit_enums_and_packed_colours(tmp_path):
    frame = pd.DataFrame({"x": [1.0, 2], "y": [1.0, 2], "z": [1.0, 2], "state": [3, 7], "rgba": [0xFF000080, 0x00FF00FF]})
    out = write_annotations(frame, tmp_path / "a", properties=["state:uint16:3=open,7=closed", "rgba:rgba"])
    reader = AnnotationReader(f"file://{out}/")
    state = reader.metadata["properties"][0]
    assert state == {"id": "state", "type": "uint16", "enum_values": [3, 7], "enum_labels": ["open", "closed"]}
    assert int(reader.by_id[1].props[0]) == 7
    assert [int(v) for v in reader.by_id[0].props[1]] == [255, 0, 0, 128]


def test_ellipsoid_bounds_include_the_radii(tmp_path):
    frame = pd.DataFrame({"x": [10.0], "y": [10.0], "z": [10.0], "rx": [5.0], "ry": [2.0], "rz": [9.5]})
    out = write_annotations(frame, tmp_path / "a", type="ellipsoid")
    info = json.loads((out / "info").read_text())
    assert info["lower_bound"] == [5.0, 8.0, 0.0]
    assert info["upper_bound"] == [16.0, 13.0, 20.0]


BAD_INPUTS = [
    ("missing column", {}, dict(columns=["x", "y", "w"]), "no column 'w'"),
    ("text coordinate", {"y": [1.0, 2.0, "abc", 4.0]}, {}, r"column 'y', row 3: coordinate 'abc' is not a finite number"),
    ("NaN coordinate", {"z": [1.0, np.nan, 3.0, 4.0]}, {}, r"column 'z', row 2"),
    ("duplicate id", {"id": [5, 6, 5, 7]}, dict(id_column="id"), r"id 5 appears twice \(rows 1 and 3\)"),
    ("negative id", {"id": [5, -6, 8, 7]}, dict(id_column="id"), r"row 2: -6 does not fit uint64"),
    ("id beyond uint64", {"id": ["1", "2", "18446744073709551616", "4"]}, dict(id_column="id"), r"row 3: .* (does not fit uint64|not a uint64)"),
    ("unknown property type", {"p": [1, 2, 3, 4]}, dict(properties=["p:uint64"]), "unknown type 'uint64'"),
    ("enum label outside", {"k": ["a", "b", "c", "a"]}, dict(properties=["k:uint8:a,b"]), r"row 3 holds 'c', which is not one of its enum labels"),
    ("enum value outside", {"k": [0, 1, 9, 1]}, dict(properties=["k:uint8:a,b"]), r"row 3 holds 9, which is not one of its enum values"),
    ("text relationship id", {"rel": ["1;2", "", "4;x", "5"]}, dict(relationships=["rel"]), r"relationship 'rel', row 3: 'x' is not a uint64"),
    ("negative relationship id", {"rel": [1, None, -2, 4]}, dict(relationships=["rel"]), r"relationship 'rel', row 3: -2.0 does not fit uint64"),
    ("value out of type range", {"k": [0, 1, 300, 1]}, dict(properties=["k:uint8"]), "outside the range of uint8"),
]


@pytest.mark.parametrize("name,override,options,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_refused_and_leaves_nothing(tmp_path, name, override, options, message):
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [1.0, 2.0, 3.0, 4.0], "z": [1.0, 2.0, 3.0, 4.0], **override})
    with pytest.raises(AnnotationInputError, match=message):
        write_annotations(frame, tmp_path / "out", **options)
    assert leftovers(tmp_path) == []


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import annotations.writer as writer

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(writer, "write_unsharded", broken)
    with pytest.raises(OSError, match="disk full"):
        write_annotations(np.ones((5, 3)), tmp_path / "out", columns=["x", "y", "z"])
    assert leftovers(tmp_path) == []


def test_existing_output_needs_overwrite(tmp_path):
    first = write_annotations(np.zeros((3, 3)), tmp_path / "out", columns=["x", "y", "z"])
    (first / "marker").write_text("old")
    with pytest.raises(AnnotationInputError, match="exists; pass overwrite=True"):
        write_annotations(np.zeros((4, 3)), tmp_path / "out", columns=["x", "y", "z"])
    write_annotations(np.zeros((4, 3)), tmp_path / "out", columns=["x", "y", "z"], overwrite=True)
    assert not (first / "marker").exists()
    assert leftovers(tmp_path) == ["out"]
    assert AnnotationReader(f"file://{first}/").by_id[3] is not None


def test_output_folder_has_the_usual_mode(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = write_annotations(np.ones((5, 3)), tmp_path / "out", columns=["x", "y", "z"])
    finally:
        os.umask(old)
    # Readable by the group and others (a server in Docker, a shared group), as mkdir under umask 022 makes it.
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", "annotate", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_writes_and_reports(tmp_path):
    frame = small_frame()
    save(frame, tmp_path / "t.csv")
    done = run_cli(
        str(tmp_path / "t.csv"), str(tmp_path / "out"), "--id-column", "cell_id", "--property", "Cell Type",
        "--relationship", "synapses", "--scale", "4,4,30", "--units", "nm", "--limit", "10", "--sharded",
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    assert "\r" not in done.stderr  # no progress bar when stderr is not a terminal
    reader = AnnotationReader(f"file://{tmp_path / 'out'}/")
    assert "sharding" in reader.metadata["by_id"] and reader.metadata["spatial"][0]["limit"] == 10
    assert [int(s) for s in reader.by_id[105].segments[0]] == [int(s) for s in frame.loc[5, "synapses"]]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--columns", "x,y,w"], "no column 'w'"),
        (["--property", "Cell Type:uint64"], "unknown type 'uint64'"),
        (["--id-column", "x"], "not a uint64|does not fit uint64"),
        (["--type", "polyline"], "polylines need an id column"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args, message):
    save(small_frame(), tmp_path / "t.csv")
    done = run_cli(str(tmp_path / "t.csv"), str(tmp_path / "out"), *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ngserve annotate: error:"), done.stderr
    assert __import__("re").search(message, lines[0]), lines[0]
    assert leftovers(tmp_path) == ["t.csv"]


def test_cli_refuses_existing_output(tmp_path):
    save(small_frame(), tmp_path / "t.csv")
    assert run_cli(str(tmp_path / "t.csv"), str(tmp_path / "out")).returncode == 0
    done = run_cli(str(tmp_path / "t.csv"), str(tmp_path / "out"))
    assert done.returncode == 2 and "--overwrite" in done.stderr
    assert run_cli(str(tmp_path / "t.csv"), str(tmp_path / "out"), "--overwrite").returncode == 0


def test_progress_bar_when_asked(tmp_path, capsys):
    write_annotations(np.random.default_rng(0).uniform(0, 9, (500, 3)), tmp_path / "a", columns=["x", "y", "z"], progress=True)
    err = capsys.readouterr().err
    assert "spatial index" in err and "writing by_id" in err
    write_annotations(np.zeros((5, 3)), tmp_path / "b", columns=["x", "y", "z"], progress=False)
    assert capsys.readouterr().err == ""


# Every id the format allows, including those a float64 or an int64 would garble: 2**53 + 1 is the
# first integer a double cannot hold, 2**63 the first an int64 cannot.
FULL_RANGE = [0, 2**53 + 1, 2**63, 2**63 + 1, 2**64 - 1]


def full_range_table(path) -> None:
    """A table whose id, single-id and list relationship columns span uint64, written as text so
    that no float64 or int64 touches the numbers on the way."""
    rows = [
        {"x": float(i), "y": 2.0, "z": 3.0, "id": v, "seg": FULL_RANGE[-1 - i], "partners": [v, FULL_RANGE[i - 1]]}
        for i, v in enumerate(FULL_RANGE)
    ]
    if path.suffix in (".csv", ".tsv"):
        sep = "," if path.suffix == ".csv" else "\t"
        lines = [sep.join(["x", "y", "z", "id", "seg", "partners"])]
        lines += [sep.join(map(str, [r["x"], r["y"], r["z"], r["id"], r["seg"], ";".join(map(str, r["partners"]))])) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".ndjson"])
def test_ids_and_relationships_span_uint64_exactly(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    full_range_table(path)
    out = write_annotations(path, tmp_path / "ann", id_column="id", relationships=["seg", "partners"], seed=0)
    reader = AnnotationReader(f"file://{out}/")
    for i, v in enumerate(FULL_RANGE):
        got = reader.by_id[v]
        assert got.point[0] == i
        assert [int(s) for s in got.segments[0]] == [FULL_RANGE[-1 - i]]
        assert [int(s) for s in got.segments[1]] == [v, FULL_RANGE[i - 1]]
        assert [int(a.id) for a in reader.relationships["seg"][FULL_RANGE[-1 - i]]] == [v]
    assert sorted(int(a.id) for a in reader.relationships["partners"][2**63 + 1]) == [2**63 + 1, 2**64 - 1]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".ndjson"])
@pytest.mark.parametrize(
    "column,value,message",
    [
        ("id", 2**64, r"id column 'id', row 3: 18446744073709551616 does not fit uint64"),
        ("id", -1, r"id column 'id', row 3: -1 does not fit uint64"),
        ("id", 2.5, r"id column 'id', row 3: 2.5 does not fit uint64"),
        ("seg", 2**64, r"relationship 'seg', row 3: 18446744073709551616 does not fit uint64"),
        ("seg", -7, r"relationship 'seg', row 3: -7 does not fit uint64"),
    ],
)
def test_ids_outside_uint64_get_one_line(tmp_path, suffix, column, value, message):
    path = tmp_path / f"t{suffix}"
    rows = [{"x": 1.0, "y": 2.0, "z": 3.0, "id": 2**64 - 1 - i, "seg": 2**63 + i} for i in range(4)]
    rows[2][column] = value
    if suffix in (".csv", ".tsv"):
        sep = "," if suffix == ".csv" else "\t"
        path.write_text("\n".join([sep.join(rows[0])] + [sep.join(map(str, r.values())) for r in rows]) + "\n")
    else:
        path.write_text(json.dumps(rows) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AnnotationInputError, match=message) as caught:
        write_annotations(path, tmp_path / "ann", id_column="id", relationships=["seg"])
    assert "\n" not in str(caught.value)
    assert leftovers(tmp_path) == [path.name]


def test_csv_integers_are_never_read_through_a_float(tmp_path):
    # Ids written as "7.0" or padded with blanks are still ids; a property of 64-bit integers is
    # refused like any integer wider than 32 bits, not silently stored as float32.
    path = tmp_path / "t.csv"
    path.write_text("x,y,z,id,count\n1,2,3, 7.0 ,1\n4,5,6,0009,18446744073709551615\n")
    out = write_annotations(path, tmp_path / "a", id_column="id")
    reader = AnnotationReader(f"file://{out}/")
    assert list(reader.by_id[7].point) == [1, 2, 3] and list(reader.by_id[9].point) == [4, 5, 6]
    with pytest.raises(AnnotationInputError, match=r"property 'count': integers beyond 32 bits"):
        write_annotations(path, tmp_path / "b", id_column="id", properties=["count"])
    with pytest.raises(AnnotationInputError, match=r"property 'count': row 2 holds 18446744073709551615, outside the range of uint32"):
        write_annotations(path, tmp_path / "b", id_column="id", properties=["count:uint32"])


def test_json_columns_object_and_a_bad_ndjson_line(tmp_path):
    by_column = tmp_path / "c.json"
    by_column.write_text(json.dumps({"x": [1.0, 2.0], "y": [1.0, 2.0], "z": [0.0, 0.0], "id": [2**64 - 1, 5]}))
    out = write_annotations(by_column, tmp_path / "a", id_column="id")
    assert list(AnnotationReader(f"file://{out}/").by_id[2**64 - 1].point) == [1, 1, 0]
    bad = tmp_path / "b.ndjson"
    bad.write_text('{"x": 1, "y": 1, "z": 1}\n\n{"x": 1, "y": 1 "z": 1}\n')
    with pytest.raises(AnnotationInputError, match=r"b.ndjson: cannot read it as ndjson: line 3: Expecting ','"):
        write_annotations(bad, tmp_path / "b")
