"""The run's output fits the terminal: at 80 columns nothing is cut and no line is longer.

``COLUMNS=80 python -m pipelines run process_pool`` is run as a person would, into a pipe
and on a real pseudo-terminal (where the live bars redraw); ``--wide`` and ``-q`` change what
is shown, never cut it.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from tests.conftest import ROOT, cli
from tests.helpers import on_a_pty, run_id_of

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b\][^\x1b]*\x1b\\")
SHORT = ("--param", "count=12")  # the real pipeline, smaller: the layout is the same


def screen_lines(raw: str) -> list[str]:
    """What a terminal shows, line by line: escape codes gone, carriage returns start a new line."""
    return [part for line in ANSI.sub("", raw).split("\n") for part in line.split("\r")]


def assert_fits(text: str, width: int = 80) -> None:
    long = [line for line in screen_lines(text) if len(line) > width]
    assert not long, "\n".join(long)
    assert "…" not in text, text


def on_a_terminal(*args: str, cwd: Path, columns: int = 80) -> str:
    """``python -m pipelines ARGS`` with stdout and stderr on a pseudo-terminal ``columns`` wide."""
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"}
    env.pop("NO_COLOR", None)
    code, shown = on_a_pty([sys.executable, "-m", "pipelines", *args], cwd=cwd, env=env, columns=columns)
    assert code == 0
    return shown


def test_process_pool_fits_80_columns_off_a_terminal(tmp_path: Path) -> None:
    proc = cli("run", "process_pool", "--dags", str(ROOT / "dags"), cwd=tmp_path, env={"COLUMNS": "80"}, check=0)
    assert_fits(proc.stdout + proc.stderr)
    header = next(line for line in proc.stdout.splitlines() if line.split()[:2] == ["stage", "executor"])
    assert header.split() == ["stage", "executor", "items", "rows", "time", "recomputed", "because"]
    assert re.search(r"^ count_primes\s+processes\s+30\s+30\s+[\d.]+s\s+new\s*$", proc.stdout, re.MULTILINE), (
        proc.stdout
    )
    assert "total: 1 row → " in proc.stdout  # one row, not "1 rows"


def test_process_pool_fits_80_columns_on_a_terminal(tmp_path: Path) -> None:
    output = on_a_terminal("run", "process_pool", *SHORT, "--dags", str(ROOT / "dags"), cwd=tmp_path)
    assert_fits(output)
    assert re.search(r"count_primes\s+processes\s+12\s+12", ANSI.sub("", output)), output


def test_reused_and_failed_items_are_shown_within_80_columns(tmp_path: Path) -> None:
    from tests.conftest import TEST_DAGS

    args = ("run", "fault_skip", "--dags", str(TEST_DAGS))
    env = {"COLUMNS": "80", "FAULT_FAIL": "3,17,31"}
    first = cli(*args, cwd=tmp_path, env=env, check=0)
    assert re.search(r"^ handle\s+threads\s+40 \(3 failed\)\s+37 ", first.stdout, re.MULTILINE), first.stdout
    assert "\nhandle: skipped 3 failed items\n" in first.stdout
    again = cli(*args, cwd=tmp_path, env=env, check=0)
    # the resume hint is one line, however long, so that it can be copied whole
    assert_fits("\n".join(line for line in (first.stdout + again.stdout).splitlines() if "resume" not in line))
    assert re.search(r"^ handle\s+threads\s+40 \(37 reused, 3 failed\)\s+37 ", again.stdout, re.MULTILINE), again.stdout


def test_wide_shows_every_column_whole(tmp_path: Path) -> None:
    proc = cli("run", "process_pool", *SHORT, "--store", str(tmp_path), "--wide", env={"COLUMNS": "80"}, check=0)
    assert "…" not in proc.stdout
    header = next(line for line in proc.stdout.splitlines() if line.split()[:2] == ["stage", "executor"])
    assert re.split(r"\s{2,}", header.strip()) == [
        "stage",
        "executor",
        "batches",
        "reused batches",
        "items",
        "reused items",
        "failed",
        "rows out",
        "wall s",
        "busy s",
        "items/s",
        "recomputed because",
    ]


def test_quiet_prints_only_the_run_its_outcome_and_the_results_paths(tmp_path: Path) -> None:
    proc = cli(
        "run", "process_pool", *SHORT, "--dags", str(ROOT / "dags"), "-q", cwd=tmp_path, env={"COLUMNS": "80"}, check=0
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 3, proc.stdout
    assert lines[0].startswith("run ") and " · ok · " in lines[1]
    assert lines[2].startswith("total: 1 row → ") and lines[2].endswith("total.parquet")


def test_the_end_of_a_collecting_run_names_its_dead_letter_file(tmp_path: Path) -> None:
    from tests.conftest import TEST_DAGS

    proc = cli(
        "run",
        "fault_collect",
        "--dags",
        str(TEST_DAGS),
        cwd=tmp_path,
        env={"COLUMNS": "80", "FAULT_FAIL": "3,23"},
        check=0,
    )
    run_id = re.search(r"^run (\S+) · ", proc.stdout, re.MULTILINE).group(1)  # type: ignore[union-attr]
    path = f".pipelines/runs/{run_id}/dead_letter/handle.arrow"
    assert f"\nhandle: collected 2 failed items into {path}\n" in proc.stdout, proc.stdout
    assert (tmp_path / path).exists()


def test_runs_at_80_columns_shows_every_run_id_and_pipeline_whole(tmp_path: Path) -> None:
    from tests.conftest import TEST_DAGS

    args = ("--dags", str(TEST_DAGS), "--store", str(tmp_path))
    ids = [run_id_of(cli("run", name, *args, "-q", check=0).stdout) for name in ("cli_squares", "deep_failure")]
    out = cli("runs", "--store", str(tmp_path), env={"COLUMNS": "80"}, check=0).stdout
    assert_fits(out.split("\nstore ")[0])  # the last line names the store's folder, however long
    for run_id, name in zip(ids, ("cli_squares", "deep_failure"), strict=True):
        assert re.search(rf"^{run_id}\s+{name}\s+(ok|partial)\s+\d{{4}}-\d\d-\d\d\s", out, re.MULTILINE), out
    wide = cli("runs", "--store", str(tmp_path), env={"COLUMNS": "200"}, check=0).stdout
    assert re.search(rf"│ {ids[0]}\s*│ cli_squares\s*│ ok\s*│", wide), wide  # boxed where it fits


def test_list_at_80_columns_wraps_each_doc_beside_its_whole_name() -> None:
    from pipelines.define.loader import discover

    out = cli("list", "--dags", str(ROOT / "dags"), env={"COLUMNS": "80"}, check=0).stdout
    assert_fits(out)
    found = discover(ROOT / "dags")
    width = max(len(p.name) for p in found)
    joined = " ".join(out.split())  # the wrapped docs, read again as one text
    for info in found:
        assert re.search(rf"^{info.name}\s{{2,}}\S", out, re.MULTILINE), out  # the name whole, its doc beside it
        assert " ".join(info.doc.split()) in joined, info.doc  # and every word of the doc
    continued = [line for line in out.splitlines() if line.startswith(" ")]
    assert continued and all(line.startswith(" " * (width + 2)) for line in continued), out


def test_list_on_a_narrow_terminal_puts_each_doc_under_its_name() -> None:
    out = cli("list", "--dags", str(ROOT / "dags"), env={"COLUMNS": "40"}, check=0).stdout
    assert_fits(out, 40)
    assert re.search(r"^joblib_parallel\n    joblib Parallel: ", out, re.MULTILINE), out


def test_show_at_80_columns_wraps_the_description_the_tree_and_the_table() -> None:
    args = ("--dags", str(ROOT / "dags"))
    tree = cli("show", "ingest", *args, env={"COLUMNS": "80"}, check=0).stdout
    assert_fits(tree)
    # a long label goes on under itself instead of being cut at the edge
    assert re.search(r"concurrency=64 retries=3\s*\n\s+timeout=60 on_error=collect", tree), tree
    assert re.search(r"also from\s*\n\s+parse_catalog\s*$", tree, re.MULTILINE), tree
    table = cli("show", "process_pool", *args, "--format", "table", env={"COLUMNS": "80"}, check=0).stdout
    assert_fits(table)
    # prose is filled again, code keeps its lines (a long one goes on, further indented)
    assert (
        "  Process pool: count the primes below each of 30 limits on worker processes,\n  then total them.\n" in table
    )
    assert re.search(r"^          return sum\(1 for k .*\n              int\(k\*\*0\.5\) \+ 1\)\)\)$", table, re.M), (
        table
    )
    assert re.search(r"^count_primes\s+map\s+cpu\s+processes\s+limits\s+Count the", table, re.MULTILINE), table
    docs = " ".join(line[67:].strip() for line in table.split("────\n")[-1].splitlines())
    assert "Count the primes below ``n`` by trial division: pure Python, CPU-bound." in " ".join(docs.split()), docs
    wide = cli("show", "process_pool", *args, "--format", "table", env={"COLUMNS": "200"}, check=0).stdout
    assert "│ count_primes │" in wide and "pure Python, CPU-bound." in wide  # boxed, one line a stage, where it fits


def test_show_where_the_stage_table_cannot_fit_gives_a_block_per_stage() -> None:
    out = cli(
        "show", "ingest", "--dags", str(ROOT / "dags"), "--format", "table", env={"COLUMNS": "80"}, check=0
    ).stdout
    assert_fits(out)
    block = "download  map · io async · asyncio\n    inputs: parse_catalog\n    options: concurrency=64 retries=3"
    assert block in out, out
    assert "    inputs: parse_catalog, describe\n    Per category: records listed in the catalog" in out, out
