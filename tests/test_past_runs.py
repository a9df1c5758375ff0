"""Past runs from Python and the shell: ``pipelines.load``, ``export``, and ``latest`` scoped.

A run that reused everything has almost no files of its own; ``load`` follows the ledger to
the parts, whichever runs wrote them. Runs started from a script resume when given the
pipeline object or the script's module.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

import pipelines
from pipelines import Pipeline
from tests.conftest import ROOT, TEST_DAGS, cli
from tests.helpers import write_dags


@pytest.fixture(scope="module")
def reused(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pipelines.RunResult, pipelines.RunResult]:
    """Two runs of ``diamond``: the second reuses everything."""
    from pipelines.define import loader

    store = tmp_path_factory.mktemp("store")
    first = pipelines.run(loader.load("diamond", TEST_DAGS), {"n": 300}, store=store, executor="threads")
    again = pipelines.run(loader.load("diamond", TEST_DAGS), {"n": 300}, store=store, executor="threads")
    assert all(s.reused_items == s.items for s in again.stages.values() if s.backend != "driver")
    return store, first, again


def test_load_latest_reads_every_stage_of_a_fully_reused_run(reused) -> None:
    store, first, again = reused
    loaded = pipelines.load("latest", store=store)
    assert loaded.run_id == again.run_id and loaded.status is pipelines.RunStatus.OK
    assert list(loaded.stages) == list(first.stages)
    for stage in first.stages:
        assert loaded.table(stage).equals(first.table(stage)), stage
        assert loaded.to_pandas(stage).equals(first.to_pandas(stage)), stage


def test_loaded_counts_agree_with_the_runs_own(reused) -> None:
    store, first, again = reused
    for result in (first, again):
        loaded = pipelines.load(result.run_id, store=store)
        for name, s in result.stages.items():
            got = loaded.stages[name]
            assert (got.items, got.reused_items, got.failed_items, got.rows, got.batches, got.reused_batches) == (
                s.items,
                s.reused_items,
                s.failed_items,
                s.rows,
                s.batches,
                s.reused_batches,
            ), name


def test_load_by_pipeline_name_and_unknown_runs(reused) -> None:
    store, _, again = reused
    assert pipelines.load("diamond", store=store).run_id == again.run_id
    assert pipelines.load("latest", store=store, pipeline="diamond").run_id == again.run_id
    with pytest.raises(pipelines.UsageError, match=r"no run 'nope' in store .*; it has runs of: diamond"):
        pipelines.load("nope", store=store)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".arrow"])
def test_export_writes_a_stage_in_the_format_of_its_extension(reused, tmp_path: Path, suffix: str) -> None:
    store, first, _ = reused
    target = tmp_path / f"out{suffix}"
    proc = cli("export", "latest", "doubled", "-o", str(target), "--store", str(store), check=0)
    assert "doubled of run " in proc.stdout and str(target) in proc.stdout
    read = {
        ".parquet": pq.read_table,
        ".csv": pcsv.read_csv,
        ".arrow": lambda p: ipc.open_file(pa.memory_map(str(p))).read_all(),
    }[suffix]
    table = read(target)
    assert table.to_pylist() == first.table("doubled").to_pylist()


def test_export_refuses_an_unknown_format(reused, tmp_path: Path) -> None:
    store, _, _ = reused
    proc = cli("export", "latest", "doubled", "-o", str(tmp_path / "out.xlsx"), "--store", str(store), check=2)
    assert "unknown format '.xlsx'" in proc.stderr


def test_to_pandas_keeps_integers_with_nulls_as_integers(tmp_path: Path) -> None:
    pipeline = Pipeline("nullable_ints")

    @pipeline.source
    def numbers():
        yield from range(5)

    @pipeline.map(over=numbers)
    def halved(x: int) -> int | None:
        return None if x % 2 else 2**60 + x

    result = pipeline.run(executor="inline", store=tmp_path)
    frame = result.to_pandas("halved")
    assert str(frame["halved"].dtype) == "Int64"
    assert frame["halved"].tolist()[:3] == [2**60, pd_na(), 2**60 + 2]


def pd_na():
    import pandas as pd

    return pd.NA


@pytest.fixture(scope="module")
def two_pipelines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A failed run of cli_failing, then a good run of cli_squares (the store's latest)."""
    store = tmp_path_factory.mktemp("store")
    cli("run", "cli_failing", "--dags", str(TEST_DAGS), "--store", str(store), check=1)
    cli("run", "cli_squares", "--dags", str(TEST_DAGS), "--store", str(store), check=0)
    return store


class TestLatestScoped:
    @pytest.fixture
    def store(self, two_pipelines: Path) -> Path:
        return two_pipelines

    @pytest.mark.parametrize("how", [("latest", "--pipeline", "cli_failing"), ("cli_failing",)])
    def test_resume_the_latest_run_of_one_pipeline(self, store: Path, how: tuple[str, ...]) -> None:
        proc = cli("resume", *how, "--store", str(store), check=1)  # it still divides by zero
        assert proc.stdout.startswith("resuming ") and "cli_failing" in proc.stdout.splitlines()[0]
        assert "failed in stage 'invert'" in proc.stdout

    def test_a_run_of_another_pipeline_is_refused(self, store: Path) -> None:
        squares = pipelines.load("cli_squares", store=store).run_id
        proc = cli("resume", squares, "--pipeline", "cli_failing", "--store", str(store), check=2)
        assert f"run {squares} is a run of pipeline 'cli_squares', not 'cli_failing'" in proc.stderr


SCRIPT = """
import os
from pipelines import Pipeline

pipeline = Pipeline("noguard")


@pipeline.source
def numbers():
    yield from range(6)


@pipeline.map(over=numbers, kind="io")
def checked(x: int) -> int:
    if x == 3 and os.environ.get("NOGUARD_FAIL"):
        raise ValueError("three")
    return x


result = pipeline.run(executor="threads")
print(result.run_id, result.status.value)
"""


def test_a_run_from_a_script_resumes_given_its_module(tmp_path: Path) -> None:
    script = write_dags(tmp_path, noguard=SCRIPT) / "noguard.py"
    env = {"PYTHONPATH": str(ROOT), "NOGUARD_FAIL": "1", "PATH": "/usr/bin:/bin"}
    ran = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    run_id, status = ran.stdout.split()
    assert status == "failed", ran.stdout + ran.stderr

    plain = cli("resume", "latest", cwd=tmp_path, check=2)
    assert f"pipelines.resume({run_id!r}, pipeline=pipeline)" in plain.stderr
    assert f"python -m pipelines resume {run_id} --module MODULE" in plain.stderr

    # importing a script without a __main__ guard runs it again (a new run, all reused): the resume follows
    resumed = cli("resume", run_id, "--module", str(script), cwd=tmp_path, check=0)
    assert f"\nresuming {run_id} · pipeline noguard\n" in resumed.stdout
    assert pipelines.load(run_id, store=tmp_path / ".pipelines").table("checked").num_rows == 6
