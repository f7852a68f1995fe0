"""``ngserve convert --add-levels``: any OME axes order, resumable after ``kill -9``, metadata only
when complete; and ``--jpeg-quality`` for precomputed jpeg output."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorstore as ts
import zarr
from test_convert import _attrs, _cli, _files, _volume, kill_9_after_a_task, reference_downsample

import volumes
import volumes.convert_add_levels as add_levels_module
from volumes.convert_sources import ConvertError
from volumes.convert_stores import ome_attrs, write_group, zarr_spec

MANIFEST = Path(".ngserve-add-levels") / ".ngserve-convert" / "manifest.json"


def _read(root: Path, path: str, version: int) -> np.ndarray:
    driver = "zarr3" if version == 3 else "zarr"
    return ts.open({"driver": driver, "kvstore": {"driver": "file", "path": f"{root}/{path}/"}}).result().read().result()


def _multiscale(root: Path, version: int) -> dict:
    attrs = _attrs(root, version)
    return (attrs["ome"] if version == 3 else attrs)["multiscales"][0]


def _ome_image(root: Path, data: np.ndarray, axes: list[tuple[str, str, str | None]], version: int,
               scale: list[float], translation: list[float], chunk: int = 8) -> None:
    """A one-level OME-Zarr image with ``axes`` in the order given, written with tensorstore."""
    chunks = [1 if t != "space" else chunk for _, t, _ in axes]
    spec = zarr_spec(root / "0", data.shape, chunks, data.dtype, version=version, compression="blosc-zstd",
                     dimension_names=[a for a, _, _ in axes] if version == 3 else None)
    ts.open({**spec, "create": True}).result().write(data).result()
    write_group(root, version, ome_attrs(version=version, name="img", axes=axes, scales=[scale],
                                         translations=[translation], omero=None, label=False, extra={}))


def _validate(root: Path, version: int) -> None:
    if version == 3:
        from ome_zarr_models.v05.image import Image
    else:
        from ome_zarr_models.v04.image import Image
    Image.from_zarr(zarr.open_group(str(root), mode="r"))


# -- interruption ----------------------------------------------------------------------------

@pytest.mark.parametrize("version", [2, 3])
def test_kill_9_then_resume_gives_identical_bytes(tmp_path, version):
    data = _volume((256, 64, 64))
    fmt = {"format": "ome-zarr-0.5", "shard": 32} if version == 3 else {}
    original = tmp_path / "original" / "img.zarr"
    volumes.convert(data, original, chunk=8, levels=1, voxel_size=(2, 1, 1), **fmt)
    clean, img = tmp_path / "clean" / "img.zarr", tmp_path / "img.zarr"
    shutil.copytree(original, clean)
    shutil.copytree(original, img)
    args = ["--add-levels", "2", "--max-memory", "600KiB", "--workers", "1"]
    r = _cli("convert", clean, *args)
    assert r.returncode == 0, r.stderr
    assert kill_9_after_a_task("convert", img, *args, manifest=img / MANIFEST) == -signal.SIGKILL, \
        "the run ended before it could be killed"
    manifest = json.loads((img / MANIFEST).read_text())
    assert "commit" not in manifest, "the run was killed too late: it had finished its tasks"
    done = manifest["done"][""]
    assert done
    # The image is as it was: its metadata names level 0 only, and nothing else is in the group.
    stopped = {k: v for k, v in _files(img).items() if not k.startswith(".ngserve-add-levels")}
    assert stopped == _files(original)
    r = _cli("convert", img, *args, "--resume")
    assert r.returncode == 0, r.stderr
    assert f"resumed after {len(done)} finished tasks" in r.stdout  # the finished tasks were not redone
    assert _files(img) == _files(clean)
    assert [d["path"] for d in _multiscale(img, version)["datasets"]] == ["0", "1", "2"]


def test_a_stop_while_committing_is_finished_by_resume_or_settled_by_the_next_run(tmp_path, monkeypatch):
    data = _volume((40, 36, 30))
    original = tmp_path / "original.zarr"
    volumes.convert(data, original, chunk=8, levels=3)
    clean, img = tmp_path / "clean.zarr", tmp_path / "img.zarr"
    shutil.copytree(original, clean)
    volumes.convert(clean, add_levels=2, from_level=1, overwrite=True, method="max")  # replaces level 2, adds 3
    real_write = add_levels_module.write_json

    def stop_at_metadata(path, obj):  # Ctrl-C after the levels were moved in, before the metadata names them
        if path.name in (".zattrs", "zarr.json"):
            raise KeyboardInterrupt
        real_write(path, obj)

    def stop_at_cleanup(path, ignore_errors=False):  # Ctrl-C after the metadata was written
        raise KeyboardInterrupt

    cases = [("write_json", stop_at_metadata, True), ("write_json", stop_at_metadata, False),
             ("shutil", SimpleNamespace(rmtree=stop_at_cleanup), False)]
    for name, stop, resume in cases:
        shutil.rmtree(img, ignore_errors=True)
        shutil.copytree(original, img)
        with monkeypatch.context() as patch:
            patch.setattr(add_levels_module, name, stop)
            with pytest.raises(KeyboardInterrupt):
                volumes.convert(img, add_levels=2, from_level=1, overwrite=True, method="max")
        assert not np.array_equal(_read(img, "2", 2), _read(original, "2", 2))  # the new level 2 is in place
        if resume:
            volumes.convert(img, add_levels=2, from_level=1, overwrite=True, method="max", resume=True)
            assert _files(img) == _files(clean)
            continue
        # Any other run first settles the stopped one (this one then stops at its own error):
        # undone while the metadata did not name the new levels, finished once it did.
        with pytest.raises(ConvertError, match="--from-level 7"):
            volumes.convert(img, add_levels=1, from_level=7)
        kept = {k: v for k, v in _files(img).items() if not k.startswith(".ngserve-add-levels")}
        assert kept == _files(original if name == "write_json" else clean), name
        assert (img / ".ngserve-add-levels").exists() == (name == "write_json")  # finished: cleaned up


# -- levels, placement and metadata for any axes order ------------------------------------------

@pytest.mark.parametrize("version", [2, 3])
def test_five_d_image_gets_levels_of_its_space_axes(tmp_path, version):
    rng = np.random.default_rng(3)
    data = (rng.random((3, 2, 13, 22, 17)) * 1000).astype(np.uint16)  # three time points of two channels
    img = tmp_path / "img.zarr"
    axes = [("t", "time", "second"), ("c", "channel", None), ("z", "space", "micrometer"),
            ("y", "space", "micrometer"), ("x", "space", "micrometer")]
    _ome_image(img, data, axes, version, [1.0, 1.0, 2.0, 0.5, 0.25], [0.0, 0.0, 10.0, 0.0, 4.0], chunk=4)
    with pytest.raises(KeyboardInterrupt):
        _interrupt_after_first_task(img, max_memory=20 << 10)  # small tiles: seams
    assert json.loads((img / MANIFEST).read_text())["done"] == {"0": [0]}  # per time point
    r = _cli("convert", "--add-levels", "2", img, "--max-memory", "20KiB", "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed after 1 finished tasks" in r.stdout
    ms = _multiscale(img, version)
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]
    prev = data
    for k in (1, 2):
        got = _read(img, str(k), version)
        want = np.stack([np.stack([reference_downsample(ch, "mean") for ch in t]) for t in prev])
        assert got.shape == want.shape == (3, 2, *want.shape[2:])
        np.testing.assert_array_equal(got, want, err_msg=f"level {k}")
        prev = got
        scale, trans = (t[t["type"]] for t in ms["datasets"][k]["coordinateTransformations"])
        f = 2 ** k
        assert scale == [1.0, 1.0, 2.0 * f, 0.5 * f, 0.25 * f]  # t and c are not downsampled
        assert trans == pytest.approx([0.0, 0.0, 10 + (f - 1) * 1.0, (f - 1) * 0.25, 4 + (f - 1) * 0.125])
    assert np.asarray(zarr.open_array(str(img / "2"), mode="r")).shape == (3, 2, 4, 6, 5)
    _validate(img, version)


@pytest.mark.parametrize("version", [2, 3])
def test_two_d_image_stays_two_d(tmp_path, version):
    data = _volume((45, 38), seed=4)
    img = tmp_path / "img.zarr"
    axes = [("y", "space", "nanometer"), ("x", "space", "nanometer")]
    _ome_image(img, data, axes, version, [4.0, 4.0], [0.0, 0.0])
    calls = []
    volumes.convert(img, add_levels=3, method="max", max_memory=20_000, progress=lambda *a: calls.append(a))
    assert calls[-1] == (23 * 19 + 12 * 10 + 6 * 5,) * 2  # the voxels written, not those read
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    ms = _multiscale(img, version)
    prev = data
    for k in (1, 2, 3):
        got = _read(img, str(k), version)
        np.testing.assert_array_equal(got, reference_downsample(prev[None], "max")[0], err_msg=f"level {k}")
        prev = got
        scale, trans = (t[t["type"]] for t in ms["datasets"][k]["coordinateTransformations"])
        assert scale == [4.0 * 2 ** k] * 2 and trans == [2.0 * (2 ** k - 1)] * 2
    assert prev.shape == (6, 5)
    _validate(img, version)


def test_stride_levels_have_no_shift_and_labels_default_to_mode(tmp_path):
    data = _volume((20, 20, 20))
    img = tmp_path / "img.zarr"
    labels = (data // 1000).astype(np.uint8)
    volumes.convert(data, img, chunk=8, levels=1, labels={"seg": labels}, voxel_size=(1, 1, 1))
    volumes.convert(img, add_levels=1, method="stride")
    trans = _multiscale(img, 2)["datasets"][1]["coordinateTransformations"][1]["translation"]
    assert trans == [0.0, 0.0, 0.0]
    np.testing.assert_array_equal(_read(img, "1", 2), data[::2, ::2, ::2])
    seg = img / "labels" / "seg"
    volumes.convert(seg, add_levels=1)  # an image-label: mode, never averaged
    np.testing.assert_array_equal(_read(seg, "1", 2), reference_downsample(labels, "mode"))


# -- errors ------------------------------------------------------------------------------------

def test_errors_are_one_line(tmp_path):
    img = tmp_path / "img.zarr"
    volumes.convert(_volume((20, 20, 20)), img, chunk=8, levels=3, labels={"seg": np.ones((20, 20, 20), np.uint8)})
    before = _files(img)
    cases = [
        ((tmp_path,), "not an OME-Zarr image group"),
        ((tmp_path / "absent.zarr",), "no such folder"),
        ((img / "labels",), f"no OME multiscales metadata; --add-levels extends an OME-Zarr image (give one of the "
                            f"images it holds, e.g. {img / 'labels' / 'seg'})"),
        ((img / "0",), "not an OME-Zarr image group"),  # a zarr array
        ((img, "--from-level", "5"), "--from-level 5: " + str(img) + " has levels 0 to 2"),
        ((img, "--from-level", "0"), "level(s) 1, 2 exist; pass --overwrite to replace them"),
        ((img, "--dask", "local", "--chunk", "16"), "--add-levels keeps the image's own format, chunks and metadata: "
                                                    "drop --chunk, --dask"),  # refused, not silently ignored
        ((img, "--resume", "--from-level", "0", "--overwrite"), None),  # nothing to resume: a fresh run
    ]
    for args, message in cases:
        r = _cli("convert", "--add-levels", "1", *args)
        if message is None:
            assert r.returncode == 0, r.stderr
            continue
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert _files(img) == before
    assert [d["path"] for d in _multiscale(img, 2)["datasets"]] == ["0", "1"]
    (img / "2").mkdir()  # a stray folder where a new level would go
    r = _cli("convert", "--add-levels", "1", img)
    assert r.returncode == 2 and "level(s) 2 exist; pass --overwrite" in r.stderr


def test_resume_refuses_other_options(tmp_path):
    img = tmp_path / "img.zarr"
    volumes.convert(_volume((64, 16, 16)), img, chunk=8, levels=1)
    with pytest.raises(KeyboardInterrupt):
        _interrupt_after_first_task(img)
    assert json.loads((img / MANIFEST).read_text())["done"][""]
    with pytest.raises(ConvertError, match="started with other inputs or options; run without --resume"):
        volumes.convert(img, add_levels=3, max_memory=40_000, resume=True)
    assert [d["path"] for d in _multiscale(img, 2)["datasets"]] == ["0"]
    r = _cli("convert", img, "--add-levels", "2", "--max-memory", "40KiB", "--workers", "1", "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed after 1 finished tasks" in r.stdout


def _interrupt_after_first_task(img: Path, max_memory: int = 40 << 10) -> None:
    from volumes import conversion

    real = conversion.record

    def stop(staging, manifest, key, t, stats):
        real(staging, manifest, key, t, stats)
        raise KeyboardInterrupt  # Ctrl-C just after the first task is recorded

    conversion.record = stop
    try:
        volumes.convert(img, add_levels=2, max_memory=max_memory, workers=1)
    finally:
        conversion.record = real


# -- jpeg quality ---------------------------------------------------------------------------------

def test_jpeg_quality_changes_the_bytes_and_reads_back_within_tolerance(tmp_path):
    z, y, x = np.mgrid[:16, :48, :48]
    rng = np.random.default_rng(5)
    data = np.clip(120 + 60 * np.sin(x / 5) * np.cos(y / 7) + z + rng.normal(0, 6, x.shape), 0, 255).astype(np.uint8)
    errors, chunks = {}, {}
    for quality in (20, 95, None):
        out = tmp_path / f"q{quality}"
        volumes.convert(data, out, format="precomputed", encoding="jpeg", chunk=16, levels=1, voxel_size=(8, 8, 8),
                        units="nanometer", jpeg_quality=quality)
        info = json.loads((out / "info").read_text())
        assert info["scales"][0]["jpeg_quality"] == (quality or 90)
        chunks[quality] = _files(out / info["scales"][0]["key"])
        got = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{out}/"}).result().read().result()
        errors[quality] = np.abs(got[..., 0].transpose(2, 1, 0).astype(int) - data).mean()
    assert chunks[20].keys() == chunks[95].keys()
    assert all(chunks[20][k] != chunks[95][k] for k in chunks[20])
    assert sum(map(len, chunks[20].values())) < sum(map(len, chunks[95].values()))
    assert errors[95] < errors[None] < errors[20] < 12 and errors[95] < 3, errors


def test_jpeg_quality_errors_are_one_line(tmp_path):
    data = np.zeros((8, 8, 8), np.uint8)
    for quality in (0, 101, 2.5):
        with pytest.raises(ConvertError, match="give a whole number from 1 to 100"):
            volumes.convert(data, tmp_path / "q", format="precomputed", encoding="jpeg", jpeg_quality=quality)
    with pytest.raises(ConvertError, match="--jpeg-quality goes with --encoding jpeg"):
        volumes.convert(data, tmp_path / "q", format="precomputed", jpeg_quality=50)
    src = tmp_path / "src.zarr"
    volumes.convert(data, src, chunk=8)
    for args, message in ((["--encoding", "jpeg", "--jpeg-quality", "0"], "--jpeg-quality 0: give a whole number"),
                          (["--jpeg-quality", "80"], "--jpeg-quality goes with --encoding jpeg")):
        r = _cli("convert", src, tmp_path / "out", "--format", "precomputed", *args)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "out").exists()

