"""``python -m pipelines report RUN -o report.html``: one self-contained file, opened in a real
headless Chromium (Debian's ``chromium``), which must render the DAG, every stage, the timeline
of every task per worker, items per second, and the failed items with their tracebacks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.store import Store
from tests.conftest import ROOT, TEST_DAGS, cli

INGEST_STAGES = ["catalog", "fetch_catalog", "parse_catalog", "download", "describe", "by_category", "report"]
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--hide-scrollbars",
)


def chromium() -> str:
    """Chromium's path; a test without it skips, except in CI, where .ci/run installs it."""
    found = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def browse(html: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *args, html.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def ingest_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    where = tmp_path_factory.mktemp("ingest")
    store = where / "store"
    run = cli("run", "ingest", "--store", str(store), "--param", "scale=2", "-q", check=0)
    run_id = run.stdout.split()[1]
    out = where / "report.html"
    made = cli("report", "latest", "-o", str(out), "--store", str(store), check=0)
    assert f"report of run {run_id} (ingest) → {out}" in made.stdout
    return out, run_id, store


def test_the_file_is_self_contained(ingest_report: tuple[Path, str, Path]) -> None:
    html = ingest_report[0].read_text()
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|<script[^>]+src=|<link[^>]+href=|@import", html), (
        "an external reference"
    )


def test_the_ledger_records_every_task_with_its_worker_and_times(ingest_report: tuple[Path, str, Path]) -> None:
    _, run_id, store = ingest_report
    with Store(store) as s:
        tasks = s.ledger.tasks(run_id)
        computed = {
            r["stage"] for r in s.ledger.query("SELECT stage FROM run_stages WHERE run_id=? AND computed>0", (run_id,))
        }
    assert {t["stage"] for t in tasks} == computed - {"catalog"}  # the source is read on the driver, not a task
    assert all(t["ended"] >= t["started"] > 0 and t["worker"] for t in tasks)
    html = ingest_report[0].read_text()
    assert html.count('<rect class="task"') == len(tasks)


def test_chromium_renders_the_dag_every_stage_and_the_timeline(
    ingest_report: tuple[Path, str, Path], tmp_path: Path
) -> None:
    html, _, _ = ingest_report
    proc = browse(html, tmp_path / "profile", "--dump-dom")
    dom = proc.stdout
    assert "<svg" in dom, proc.stderr
    drawn = re.findall(r'<g class="stage" data-stage="([^"]+)"', dom)
    assert drawn == INGEST_STAGES
    assert len(re.findall(r'<path class="edge"', dom)) == 7  # report also reads parse_catalog
    listed = re.findall(r'<tr class="stage-row"><td><span[^>]*></span>([^<]+)</td>', dom)
    assert listed == INGEST_STAGES
    timed = set(re.findall(r'<rect class="task" data-stage="([^"]+)"', dom))
    assert {"fetch_catalog", "parse_catalog", "download", "describe", "by_category", "report"} <= timed
    assert set(re.findall(r'<polyline class="rate" data-stage="([^"]+)"', dom)) == timed


def test_a_screenshot_shows_the_stages_colours(ingest_report: tuple[Path, str, Path], tmp_path: Path) -> None:
    from PIL import Image

    from pipelines.observe.html_report import PALETTE

    shot = tmp_path / "report.png"
    browse(ingest_report[0], tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,1800")
    image = Image.open(shot).convert("RGB")
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20)}
    wanted = {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in PALETTE[: len(INGEST_STAGES)]}
    assert len(wanted & colours) >= len(INGEST_STAGES) - 1  # the boxes' edges and the legend's swatches


def test_failed_items_come_with_their_tracebacks(tmp_path: Path) -> None:
    store = tmp_path / "store"
    cli("run", "deep_failure", "--dags", str(TEST_DAGS), "--store", str(store), check=0)
    out = tmp_path / "failed.html"
    cli("report", "deep_failure", "-o", str(out), "--store", str(store), check=0)
    dom = browse(out, tmp_path / "profile", "--dump-dom").stdout
    failures = re.findall(r'<details class="failure" open="">(.*?)</details>', dom, re.DOTALL)
    assert len(failures) == 2
    assert "item 2: ValueError: item 2 has no key" in failures[0]
    assert "KeyError: 'key-2'" in failures[0] and "The above exception was the direct cause" in failures[0]
    assert "in helper2" in failures[0]


def test_ci_installs_chromium() -> None:
    assert "apt-get install -y chromium" in (ROOT / ".ci" / "run").read_text()
