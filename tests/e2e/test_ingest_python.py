"""dags/ingest.py end to end through ``pipelines.run``: real server, real files, real processes."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

import pipelines
from pipelines import RunStatus
from pipelines.define import loader
from stages.serve import serve_directory

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
CATALOG = json.loads((DATA / "catalog.json").read_text())
LISTED = Counter(entry["category"] for entry in CATALOG)
STAGES = ("fetch_catalog", "parse_catalog", "download", "describe", "by_category", "report")


@pytest.fixture(scope="module")
def ingest() -> pipelines.Pipeline:
    """The flagship pipeline, loaded from the repository's dags folder as the CLI does."""
    return loader.load("ingest", ROOT / "dags")


def column(result: pipelines.RunResult, stage: str, *names: str) -> dict[str, object]:
    table = result.table(stage).to_pydict()
    return {
        key: (values[0] if len(names) == 1 else values)
        for key, *values in zip(table["category"], *(table[n] for n in names), strict=True)
    }


def test_threads_match_the_catalog(ingest, tmp_path):
    result = pipelines.run(ingest, store=tmp_path, executor="threads")
    assert result.status == RunStatus.OK, result.error
    assert column(result, "by_category", "images") == LISTED
    sizes = Counter()
    widths: dict[str, list[int]] = {}
    for entry in CATALOG:
        sizes[entry["category"]] += (DATA / entry["path"]).stat().st_size
        widths.setdefault(entry["category"], []).append(Image.open(DATA / entry["path"]).width)
    assert column(result, "by_category", "bytes") == sizes
    assert column(result, "by_category", "mean_width") == pytest.approx({k: sum(v) / len(v) for k, v in widths.items()})
    assert column(result, "report", "listed", "described", "missing") == {k: [n, n, 0] for k, n in LISTED.items()}


def test_items_hold_no_port_so_runs_can_share_results(ingest, tmp_path):
    result = pipelines.run(ingest, {"limit": 5}, store=tmp_path, executor="threads")
    paths = result.table("parse_catalog").column("path").to_pylist()
    assert paths == [entry["path"] for entry in CATALOG[:5]]
    assert os.environ.get("PIPELINES_INGEST_BASE_URL") is None  # the lifespan's variable is gone


def test_default_executors_scale_and_reuse(ingest, tmp_path):
    first = pipelines.run(ingest, {"scale": 3}, store=tmp_path)
    assert first.status == RunStatus.OK, first.error
    assert (first.stages["download"].backend, first.stages["describe"].backend) == ("asyncio", "processes")
    assert column(first, "by_category", "images") == {k: 3 * n for k, n in LISTED.items()}
    ids = first.table("describe").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 3 * len(CATALOG)

    second = pipelines.run(ingest, {"scale": 3}, store=tmp_path)  # a new server, on a new port
    assert second.status == RunStatus.OK
    for name in STAGES[1:]:  # the catalog is fetched in every run (reuse="never"); the same one: all the rest is reused
        stage = second.stages[name]
        assert stage.items > 0 and stage.reused_items == stage.items and stage.computed_batches == 0, stage
    assert second.stages["fetch_catalog"].computed_batches == 1
    assert second.table("by_category").equals(first.table("by_category"))


def test_limit_applies_after_scaling(ingest, tmp_path):
    result = pipelines.run(ingest, {"scale": 2, "limit": 20}, store=tmp_path, executor="threads")
    assert result.table("describe").num_rows == 20
    assert sum(column(result, "report", "listed").values()) == 20


def test_base_url_param_reads_from_that_server(ingest, tmp_path):
    with serve_directory(DATA) as base_url:
        result = pipelines.run(
            ingest, {"base_url": base_url.rstrip("/"), "limit": 3}, store=tmp_path, executor="threads"
        )
    assert result.status == RunStatus.OK
    assert result.table("describe").column("id").to_pylist() == [entry["id"] for entry in CATALOG[:3]]


def broken_data(folder: Path) -> Path:
    """A data folder with one good image, one truncated image and one missing image."""
    (folder / "images").mkdir(parents=True)
    shutil.copy(DATA / "images" / "coffee.png", folder / "images" / "coffee.png")
    rocket = (DATA / "images" / "rocket.jpg").read_bytes()
    (folder / "images" / "rocket.jpg").write_bytes(rocket[: len(rocket) // 2])
    good = next(e for e in CATALOG if e["id"] == "coffee")
    records = [
        good,
        {**good, "id": "rocket", "path": "images/rocket.jpg"},
        {**good, "id": "ghost", "category": "animals", "path": "images/missing.png"},
    ]
    (folder / "catalog.json").write_text(json.dumps(records))
    return folder


def test_bad_items_are_recorded_and_the_run_goes_on(ingest, tmp_path):
    data_dir = broken_data(tmp_path / "data")
    result = pipelines.run(ingest, {"data_dir": str(data_dir)}, store=tmp_path / "store", executor="threads")
    assert result.status == RunStatus.PARTIAL
    failures = {f.stage: f for f in result.failures}
    assert (failures["download"].error_type, failures["describe"].error_type) == ("HTTPStatusError", "ValueError")
    assert "images/missing.png: HTTP 404" in failures["download"].message
    assert failures["download"].attempts == 1  # a 404 is not retried
    assert failures["describe"].message.startswith("images/rocket.jpg: cannot decode image")
    assert "truncated" in failures["describe"].message
    assert column(result, "report", "listed", "described", "missing") == {"animals": [1, 0, 1], "objects": [2, 1, 1]}


def test_invalid_catalog_fails_with_the_record_and_field(ingest, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "catalog.json").write_text(json.dumps([CATALOG[0], {**CATALOG[1], "path": "../../etc/passwd"}]))
    result = pipelines.run(ingest, {"data_dir": str(data_dir)}, store=tmp_path / "store", executor="threads")
    assert result.status == RunStatus.FAILED
    (failure,) = result.failures
    assert failure.stage == "parse_catalog"
    assert "catalog.json, record 1 at byte" in failure.message and "field 'path'" in failure.message
