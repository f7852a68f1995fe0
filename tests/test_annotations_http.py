"""Written annotations served by ``ngserve serve``: neuroglancer's reader over HTTP, and the viewer."""

from __future__ import annotations

import numpy as np
import pytest
from browser import (
    assert_only_metadata_probes_failed,
    browser_page,
    rendered_fraction,
    viewer_status_text,
    wait_until,
)
from neuroglancer.read_precomputed_annotations import AnnotationReader
from test_annotations_support import check_annotations, expected_annotations, synthetic_table

import ngstate
from annotations import ANNOTATION_TYPES, write_annotations

SIZES = {"point": 1500, "line": 300, "axis_aligned_bounding_box": 250, "ellipsoid": 200, "polyline": 200}
LIMIT = 100


@pytest.mark.parametrize("type_", ANNOTATION_TYPES)
def test_read_over_http(start_server, tmp_path, type_):
    frame, options = synthetic_table(type_, SIZES[type_], seed=11)
    expected = expected_annotations(frame, type_, options["columns"])
    for sharded in (False, True):
        write_annotations(frame, tmp_path / f"sharded{sharded}", limit=LIMIT, sharded=sharded, seed=4, **options)
    srv = start_server("serve", str(tmp_path))
    for sharded in (False, True):
        reader = AnnotationReader(f"{srv.url}/sharded{sharded}/")
        check_annotations(reader, expected, type_, LIMIT)
    # Shards are read in pieces: the server answered Range requests, never the whole file.
    assert srv.requested(r'"GET /shardedTrue/spatial\d+/[0-9a-f]+\.shard HTTP[^"]*" 206 ')
    assert not srv.requested(r'\.shard HTTP[^"]*" 200 ')
    assert srv.requested(r'"GET /shardedFalse/by_id/\d+ HTTP[^"]*" 200 ')


def test_viewer_shows_annotation_layer(start_server, tmp_path):
    rng = np.random.default_rng(2)
    centres = rng.uniform(0, 1, (25, 3)) * [400, 300, 40]
    points = (centres[rng.integers(0, 25, 40000)] + rng.normal(0, 1, (40000, 3)) * [12, 12, 3]).clip(0)
    frame = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2], "size": rng.uniform(1, 5, len(points))}
    write_annotations(frame, tmp_path / "data" / "cells", properties=["size"], scale=[8, 8, 40], limit=1000,
                      sharded=True, seed=0)
    srv = start_server("serve", str(tmp_path))
    url = ngstate.link(f"{srv.url}/data/cells")
    spatial = r'"GET /data/cells/spatial\d+/[0-9a-f]+\.shard HTTP[^"]*" 206 '
    with browser_page() as (page, errors):
        page.goto(url)
        if not wait_until(lambda: srv.requested(spatial), timeout=90):
            pytest.fail(
                f"no spatial chunk requested; page errors {errors.all()}; status {viewer_status_text(page)!r}; "
                f"state {page.url}\n" + "".join(srv.log[-30:])
            )
        status = viewer_status_text(page)
        drawn = rendered_fraction(page)
    assert_only_metadata_probes_failed(srv, errors)
    assert not srv.requested(r'" 5\d\d ')
    assert "Error" not in status, status
    assert drawn > 0.005, drawn  # the points cover a visible part of the screen
    assert srv.requested(r'"GET /data/cells/info HTTP[^"]*" 200 ')
