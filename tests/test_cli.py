"""``python -m pipelines`` in real subprocesses: exit codes 0/1/2, what is printed, and what is not.

Test pipelines are ``tests/dags/cli_*.py``; broken modules are in ``tests/dags_broken/``.
Each run-producing fixture runs once per module, so the whole file stays fast.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT, TEST_DAGS, cli

BROKEN = Path(__file__).resolve().parent / "dags_broken"


def line_of(path: Path, text: str) -> int:
    """The number of the first line of ``path`` that holds ``text`` (so that reformatting moves no test)."""
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


SUBCOMMANDS = ["run", "resume", "list", "show", "runs", "inspect"]
RUN_ID = re.compile(r"^(?:run|resuming) (\d{8}-\d{6}-[0-9a-f]+) · pipeline", re.MULTILINE)


@dataclass(frozen=True)
class Run:
    proc: subprocess.CompletedProcess[str]
    store: Path
    run_id: str

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr


def concurrently(calls: dict[str, tuple[str, ...]], **kwargs: object) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run several ``python -m pipelines`` commands at once (each is mostly start-up and waiting)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {key: pool.submit(cli, *args, **kwargs) for key, args in calls.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Three runs into one store, started together: ok, failed (exit 1) and partial (exit 0)."""
    store = tmp_path_factory.mktemp("store")
    common = ("--dags", str(TEST_DAGS), "--store", str(store))
    procs = concurrently(
        {
            "squares": ("run", "cli_squares", "--param", "n=10", "-p", "offset=1", *common),
            "failing": ("run", "cli_failing", *common),
            "skipping": ("run", "cli_skipping", *common),
        }
    )
    out = {}
    for key, proc in procs.items():
        wanted = 1 if key == "failing" else 0
        assert proc.returncode == wanted, f"{key}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        match = RUN_ID.search(proc.stdout)
        assert match, proc.stdout
        out[key] = Run(proc, store, match.group(1))
    return out


@pytest.fixture(scope="module")
def squares(runs: dict[str, Run]) -> Run:
    return runs["squares"]


@pytest.fixture(scope="module")
def failing(runs: dict[str, Run]) -> Run:
    return runs["failing"]


@pytest.fixture(scope="module")
def skipping(runs: dict[str, Run]) -> Run:
    return runs["skipping"]


def assert_usage_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2, a short message on stderr, and no traceback."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, f"{needle!r} not in {proc.stderr!r}"


# -- help and discovery -------------------------------------------------------------------------------------


class TestHelp:
    def test_top_level_help_lists_every_command(self) -> None:
        proc = cli("--help", check=0)
        for command in SUBCOMMANDS:
            assert re.search(rf"^\s+{command}\s+\S", proc.stdout, re.MULTILINE), command

    @pytest.mark.parametrize("command", SUBCOMMANDS)
    def test_subcommand_help(self, command: str) -> None:
        proc = cli(command, "--help", check=0)
        assert proc.stdout.startswith(f"usage: python -m pipelines {command}")
        assert "--store" in proc.stdout and "--dags" in proc.stdout

    def test_no_command_is_a_usage_error(self) -> None:
        proc = cli()
        assert proc.returncode == 2
        assert "required: COMMAND" in proc.stderr


class TestList:
    def test_names_and_docstring_first_lines(self) -> None:
        proc = cli("list", "--dags", str(TEST_DAGS), check=0)
        lines = proc.stdout.splitlines()
        assert any(re.fullmatch(r"cli_squares\s+Squares of the first N numbers, and their sum\.", ln) for ln in lines)
        assert any(
            re.fullmatch(r'cli_failing\s+Inverts numbers and fails on zero under on_error="fail"\.', ln) for ln in lines
        )
        assert not any("A small, valid pipeline" in ln for ln in lines)  # first line only

    def test_broken_modules_are_listed_not_imported(self) -> None:
        proc = cli("list", "--dags", str(BROKEN), check=0)
        assert re.search(r"^syntax_error\s+\(cannot be parsed", proc.stdout, re.MULTILINE)
        assert re.search(r"^broken_import\s+A module that imports", proc.stdout, re.MULTILINE)
        assert "no_such_module" not in proc.stderr

    def test_empty_folder(self, tmp_path: Path) -> None:
        proc = cli("list", "--dags", str(tmp_path), check=0)
        assert proc.stdout == ""
        assert f"no pipelines in {tmp_path}" in proc.stderr

    def test_imports_no_heavy_modules(self) -> None:
        code = textwrap.dedent(f"""
            import json, sys
            from pipelines.cli.commands import main
            assert main(["list", "--dags", {str(TEST_DAGS)!r}]) == 0
            print(json.dumps(sorted(sys.modules)))
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        modules = json.loads(proc.stdout.splitlines()[-1])
        heavy = {
            "pyarrow",
            "pandas",
            "numpy",
            "distributed",
            "dask",
            "ray",
            "joblib",
            "pydantic",
            "aiohttp",
            "executors",
            "pipelines.store",
            "pipelines._engine.runner",
            "pipelines.define.model",
        }
        assert not [m for m in modules if m in heavy or m.split(".")[0] in heavy - {"pipelines"}]
        assert not [m for m in modules if m.startswith("dags")]  # no pipeline module was imported

    def test_importtime_of_list(self) -> None:
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "pipelines", "list", "--dags", str(TEST_DAGS)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert proc.returncode == 0
        imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
        assert "pipelines.define.loader" in imported
        assert not imported & {"pyarrow", "pandas", "distributed", "ray", "executors"}


class TestShow:
    def test_stages_kinds_executors_and_edges(self) -> None:
        proc = cli("show", "cli_squares", "--format", "table", "--dags", str(TEST_DAGS), check=0)
        out = proc.stdout
        assert out.startswith("cli_squares (dags")
        assert "Squares of the first N numbers, and their sum." in out
        assert "params: n=20, offset=0" in out
        assert re.search(r"numbers\s*│\s*source\s*│\s*io\s*│\s*driver\s*│", out)
        assert re.search(r"square\s*│\s*map\s*│\s*cpu\s*│\s*processes\s*│\s*numbers\s*│", out)
        assert re.search(r"total\s*│\s*reduce\s*│\s*cpu\s*│\s*processes\s*│\s*square\s*│", out)
        assert "Square one number." in out  # stage docstrings

    def test_with_executor_option(self) -> None:
        proc = cli(
            "show", "cli_skipping", "--executor", "inline", "--format", "table", "--dags", str(TEST_DAGS), check=0
        )
        assert re.search(r"parse\s*│\s*map\s*│\s*io\s*│\s*inline\s*│", proc.stdout)
        assert "on_error=skip" in proc.stdout

    def test_unknown_executor(self) -> None:
        proc = cli("show", "cli_squares", "--executor", "nope", "--dags", str(TEST_DAGS))
        assert_usage_error(proc, "unknown executor 'nope'")


# -- runs -----------------------------------------------------------------------------------------------------


class TestRun:
    def test_ok_prints_summary_and_parquet_path(self, squares: Run) -> None:
        out = squares.proc.stdout
        assert f"cli_squares · {squares.run_id} · ok" in out
        for stage, executor in (("numbers", "driver"), ("square", "processes"), ("total", "processes")):
            assert re.search(rf"^ {stage}\s+{executor}\s", out, re.MULTILINE), stage
        match = re.search(r"^total: 1 row → (\S+\.parquet)$", out, re.MULTILINE)
        assert match, out
        path = (ROOT / match.group(1)).resolve()
        assert path == squares.store / "runs" / squares.run_id / "outputs" / "total.parquet"
        assert pq.read_table(path).to_pylist() == [{"count": 10, "sum": sum(x * x for x in range(1, 11))}]
        assert "resume" not in out
        assert squares.proc.stderr == ""

    def test_output_folder(self, tmp_path: Path) -> None:
        cli(
            "run",
            "cli_skipping",
            "--dags",
            str(TEST_DAGS),
            "--store",
            str(tmp_path / "s"),
            "--output",
            str(tmp_path / "out"),
            "--executor",
            "inline",
            "--quiet",
            check=0,
        )
        assert pq.read_table(tmp_path / "out" / "parse.parquet").column("parse").to_pylist() == [1, 2, 4, 5]

    def test_failed_item_names_stage_and_cause(self, failing: Run) -> None:
        assert f"cli_failing · {failing.run_id} · failed" in failing.output
        assert "'invert'" in failing.output
        assert "ZeroDivisionError: one over zero" in failing.output
        assert "Traceback" not in failing.proc.stderr

    def test_failed_item_names_the_item(self, failing: Run) -> None:
        assert re.search(r"item 5\b", failing.output), failing.output

    def test_failed_run_prints_a_copyable_resume_command(self, failing: Run) -> None:
        line = next(ln for ln in failing.proc.stdout.splitlines() if "python -m pipelines resume" in ln)
        command = line[line.index("python -m pipelines resume") :]
        assert command == f"python -m pipelines resume {failing.run_id} --store {failing.store}"
        argv = shlex.split(command)
        proc = subprocess.run(
            [sys.executable, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "PIPELINES_DAGS": "", "PIPELINES_STORE": ""},
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr  # the item still fails, but the command works
        assert f"resuming {failing.run_id}" in proc.stdout

    def test_skipped_item_exits_0_and_says_partial(self, skipping: Run) -> None:
        out = skipping.proc.stdout
        assert f"cli_skipping · {skipping.run_id} · partial" in out
        assert "1 of 5 items failed in stage 'parse'" in out
        assert "ValueError: invalid literal for int() with base 10: 'three'" in out
        assert f"python -m pipelines resume {skipping.run_id}" in out
        assert (skipping.store / "runs" / skipping.run_id / "outputs" / "parse.parquet").is_file()


BROKEN_MODULES = {
    "syntax_error": ["syntax_error.py, line 9: expected ':'"],
    "broken_import": [
        f"broken_import.py, line {line_of(BROKEN / 'broken_import.py', 'import no_such_module')}:",
        "No module named 'no_such_module_for_pipelines_tests'",
    ],
    "failing_import": [
        f"failing_import.py, line {line_of(BROKEN / 'failing_import.py', 'raise RuntimeError')}:",
        "RuntimeError: configuration file settings.toml",
    ],
    "cyclic": ["is part of a cycle: "],
    "duplicate": ["stage 'double': a stage of that name is already defined"],
    "bad_arity": ["stage 'add': parameter(s) 'y' of add() receive nothing"],
    "unknown_upstream": ["stage 'double': unknown input stage 'numbrs' (did you mean 'numbers'?)"],
}

USAGE_ERRORS: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "param validation": (
        ("run", "cli_squares", "--param", "n=-1"),
        ["invalid parameters for pipeline 'cli_squares': n:", "greater than or equal to 0"],
    ),
    "param not an integer": (("run", "cli_squares", "-p", "n=ten"), ["n: Input should be a valid integer"]),
    "unknown param": (
        ("run", "cli_squares", "--param", "ofset=3"),
        ["pipeline 'cli_squares' has no parameter 'ofset' (did you mean 'offset'?)"],
    ),
    "param without equals": (("run", "cli_squares", "--param", "n"), ["--param 'n' is not KEY=VALUE"]),
    "unknown pipeline": (("run", "cli_squars"), ["no pipeline named 'cli_squars'", "(did you mean 'cli_squares'?)"]),
    "unknown pipeline to show": (("show", "cli_squars"), ["(did you mean 'cli_squares'?)"]),
    "unknown executor": (
        ("run", "cli_squares", "--executor", "thread"),
        ["unknown executor 'thread' (did you mean 'threads'?)"],
    ),
    "unknown executor to show": (
        ("show", "cli_squares", "--executor", "thread"),
        ["unknown executor 'thread' (did you mean 'threads'?)"],
    ),
    "zero workers": (("run", "cli_squares", "--workers", "0"), ["--workers must be a positive integer, not 0"]),
    "zero runs": (("runs", "--limit", "0"), ["--limit must be a positive integer, not 0"]),
    "negative rows": (("inspect", "latest", "--rows", "-1"), ["--rows must be zero or a positive integer, not -1"]),
    "unknown run to inspect": (("inspect", "nope"), ["no run 'nope' in store"]),
    "unknown run to resume": (("resume", "nope"), ["no run 'nope' in store"]),
    **{
        f"run {module}": (("run", module, "--dags", str(BROKEN)), needles) for module, needles in BROKEN_MODULES.items()
    },
    **{
        f"show {module}": (("show", module, "--dags", str(BROKEN)), BROKEN_MODULES[module])
        for module in ("syntax_error", "cyclic")
    },
}


@pytest.fixture(scope="module")
def usage_errors(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, subprocess.CompletedProcess[str]]]:
    store = tmp_path_factory.mktemp("usage")
    calls = {
        key: (*args, "--store", str(store), *(() if "--dags" in args else ("--dags", str(TEST_DAGS))))
        for key, (args, _) in USAGE_ERRORS.items()
    }
    return store, concurrently(calls)


class TestUsageErrors:
    @pytest.mark.parametrize("case", USAGE_ERRORS)
    def test_exit_2_with_a_short_message(self, usage_errors, case: str) -> None:
        _, procs = usage_errors
        assert_usage_error(procs[case], *USAGE_ERRORS[case][1])

    def test_nothing_was_run(self, usage_errors) -> None:
        store, _ = usage_errors
        assert not list((store / "runs").glob("*"))

    def test_missing_dags_folder(self, tmp_path: Path) -> None:
        proc = cli("run", "anything", "--dags", str(tmp_path / "nowhere"), "--store", str(tmp_path / "s"))
        assert_usage_error(proc, "does not exist; use --dags DIR")

    def test_debug_shows_the_traceback(self, store: Path) -> None:
        proc = cli("run", "failing_import", "--dags", str(BROKEN), "--store", str(store), "--debug")
        assert proc.returncode == 2
        assert "Traceback (most recent call last)" in proc.stderr
        assert f'failing_import.py", line {line_of(BROKEN / "failing_import.py", "raise RuntimeError")}' in proc.stderr
        assert proc.stderr.rstrip().splitlines()[-1].startswith("error: tests/dags_broken/failing_import.py")

    @pytest.mark.parametrize("name", ["cli[dask]", "cli[/x]"])
    def test_brackets_in_a_message_are_printed_as_is(self, store: Path, name: str) -> None:
        proc = cli("run", name, "--dags", str(TEST_DAGS), "--store", str(store))
        assert_usage_error(proc, f"no pipeline named '{name}'")

    def test_negative_workers(self, store: Path) -> None:
        proc = cli("run", "cli_squares", "--workers", "-1", "--dags", str(TEST_DAGS), "--store", str(store))
        assert_usage_error(proc, "--workers")

    def test_brackets_in_data_and_failures_are_printed_as_is(self, tmp_path: Path) -> None:
        proc = cli(
            "run",
            "cli_brackets",
            "--executor",
            "inline",
            "--dags",
            str(TEST_DAGS),
            "--store",
            str(tmp_path / "s"),
            check=0,
        )
        out = proc.stdout
        assert re.search(r"^│ <\[bold\]kept\[/bold\]>\s*│$", out, re.MULTILINE), out
        assert re.search(r"^│ <extra\[dask\]>\s*│$", out, re.MULTILINE), out
        assert re.search(r"^┃ \[col\]\s*┃$", out, re.MULTILINE), out  # a column name
        assert "1 of 3 items failed in stage 'tag' (ValueError: cannot tag [/x] or [red]this[/red]) at item 2" in out
        assert proc.stderr == ""

    def test_unwritable_store(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        proc = cli("run", "cli_squares", "--dags", str(TEST_DAGS), "--store", str(tmp_path / "file" / "store"))
        assert_usage_error(proc, "is not writable")


# -- runs and inspect ---------------------------------------------------------------------------------------


class TestRuns:
    def test_lists_runs_with_status(self, runs: dict[str, Run]) -> None:
        proc = cli("runs", "--store", str(runs["squares"].store), check=0)
        for key, status in (("skipping", "partial"), ("squares", "ok"), ("failing", "failed")):
            run = runs[key]
            assert re.search(rf"│ {run.run_id}\s*│ cli_{key}\s*│ {status}\s*│", proc.stdout), proc.stdout
        assert len(re.findall(r"│ \d{8}-\d{6}-", proc.stdout)) == 3

    def test_empty_store(self, store: Path) -> None:
        proc = cli("runs", "--store", str(store), check=0)
        assert f"no runs in {store}" in proc.stdout

    def test_a_running_run_nobody_holds_is_crashed(self, tmp_path: Path) -> None:
        from pipelines.store import Store

        with Store(tmp_path / "s") as store:
            store.ledger.create_run(
                "20260101-000000-dead", pipeline="p", module="m", dags_dir=None, params=None, options={}
            )
        proc = cli("runs", "--store", str(tmp_path / "s"), check=0)
        assert re.search(r"│ 20260101-000000-dead\s*│ p\s*│ crashed\s*│", proc.stdout), proc.stdout


class TestInspect:
    def test_run_overview(self, squares: Run) -> None:
        proc = cli("inspect", squares.run_id, "--store", str(squares.store), check=0)
        assert proc.stdout.startswith(f"{squares.run_id} · cli_squares · ok")
        for stage in ("numbers", "square", "total"):
            assert re.search(rf"│ {stage}\s*│ done\s*│", proc.stdout), stage

    def test_stage_schema_and_rows(self, squares: Run) -> None:
        proc = cli("inspect", squares.run_id, "square", "--rows", "3", "--store", str(squares.store), check=0)
        out = proc.stdout
        assert "stage square: 10 rows" in out
        assert "schema:\n  square: int64" in out
        assert "_item" not in out
        assert "first 3 rows" in out
        assert [int(v) for v in re.findall(r"^│ (\d+)\s*│$", out, re.MULTILINE)] == [1, 4, 9]

    def test_overview_counts_failed_items(self, skipping: Run) -> None:
        proc = cli("inspect", skipping.run_id, "--store", str(skipping.store), check=0)
        assert proc.stdout.startswith(f"{skipping.run_id} · cli_skipping · partial")
        # items counts every item the stage processed, the failed one among them (as the run's summary does)
        assert re.search(r"│ parse\s*│ partial\s*│ threads\s*│ 1\s*│ 0\s*│ 5\s*│ 1\s*│", proc.stdout), proc.stdout
        assert f"1 failed item; `inspect {skipping.run_id} STAGE` shows them" in proc.stdout

    def test_failed_items(self, skipping: Run) -> None:
        proc = cli("inspect", skipping.run_id, "parse", "--store", str(skipping.store), check=0)
        out = proc.stdout
        assert "stage parse: 4 rows" in out
        assert "1 failed item:" in out
        assert "item 2: ValueError: invalid literal for int() with base 10: 'three' (attempts: 1)" in out
        assert "input: 'three'" in out
        assert re.search(r'File ".*cli_skipping\.py", line \d+, in parse', out)

    def test_failed_item_of_a_failed_run(self, failing: Run) -> None:
        proc = cli("inspect", failing.run_id, "invert", "--store", str(failing.store), check=0)
        assert "item 5: ZeroDivisionError: one over zero" in proc.stdout

    def test_overview_lists_stages_in_pipeline_order(self, failing: Run) -> None:
        proc = cli("inspect", failing.run_id, "--store", str(failing.store), check=0)
        stages = re.findall(r"^│ (\w+)\s*│ \w+\s*│", proc.stdout, re.MULTILINE)
        assert stages == ["numbers", "invert"], proc.stdout  # not alphabetical

    def test_zero_rows_shows_the_schema_only(self, squares: Run) -> None:
        proc = cli("inspect", squares.run_id, "square", "--rows", "0", "--store", str(squares.store), check=0)
        assert "schema:\n  square: int64" in proc.stdout
        assert "first 0 rows" not in proc.stdout

    def test_unknown_stage(self, squares: Run) -> None:
        proc = cli("inspect", squares.run_id, "sqare", "--store", str(squares.store))
        assert_usage_error(proc, f"run {squares.run_id} has no stage 'sqare'", "square")


# -- where the store and the dags come from -------------------------------------------------------------------------


class TestLocations:
    def test_environment_variables(self, tmp_path: Path) -> None:
        env = {"PIPELINES_STORE": str(tmp_path / "env-store"), "PIPELINES_DAGS": str(TEST_DAGS)}
        assert "cli_skipping" in cli("list", env=env, cwd=tmp_path, check=0).stdout
        run_id = RUN_ID.search(
            cli("run", "cli_skipping", "--executor", "inline", env=env, cwd=tmp_path, check=0).stdout
        ).group(1)
        assert (tmp_path / "env-store" / "runs" / run_id).is_dir()
        assert not (tmp_path / ".pipelines").exists()

    def test_flags_win_over_environment(self, tmp_path: Path) -> None:
        env = {"PIPELINES_STORE": str(tmp_path / "env-store"), "PIPELINES_DAGS": str(tmp_path / "no-dags")}
        proc = cli(
            "run",
            "cli_skipping",
            "--executor",
            "inline",
            "--dags",
            str(TEST_DAGS),
            "--store",
            str(tmp_path / "flag-store"),
            env=env,
            cwd=tmp_path,
            check=0,
        )
        run_id = RUN_ID.search(proc.stdout).group(1)
        assert (tmp_path / "flag-store" / "runs" / run_id).is_dir()
        assert not (tmp_path / "env-store").exists()

    def test_global_options_before_the_command(self, squares: Run, tmp_path: Path) -> None:
        assert squares.run_id in cli("--store", str(squares.store), "runs", cwd=tmp_path, check=0).stdout
        assert "cli_squares" in cli("--dags", str(TEST_DAGS), "list", cwd=tmp_path, check=0).stdout

    def test_an_option_after_the_command_wins(self, squares: Run, tmp_path: Path) -> None:
        proc = cli("--store", str(tmp_path / "elsewhere"), "runs", "--store", str(squares.store), cwd=tmp_path, check=0)
        assert squares.run_id in proc.stdout

    def test_debug_before_the_command(self, tmp_path: Path) -> None:
        proc = cli("--debug", "run", "failing_import", "--dags", str(BROKEN), "--store", str(tmp_path / "s"))
        assert proc.returncode == 2
        assert "Traceback (most recent call last)" in proc.stderr

    def test_a_users_own_project(self, tmp_path: Path) -> None:
        """A folder with its own dags/ package, used from its own cwd with no flags: like this repository."""
        project = tmp_path / "myproject"
        (project / "dags").mkdir(parents=True)
        (project / "dags" / "_shared.py").write_text("def triple(x: int) -> int:\n    return 3 * x\n")
        (project / "dags" / "words.py").write_text(
            textwrap.dedent('''
            """Word lengths, tripled."""
            from collections.abc import Iterator

            from pydantic import BaseModel

            from pipelines import Pipeline

            from ._shared import triple


            class Params(BaseModel):
                text: str = "a bb ccc"


            pipeline = Pipeline("words", params=Params)


            @pipeline.source
            def words(params: Params) -> Iterator[str]:
                yield from params.text.split()


            @pipeline.map(over=words, kind="cpu")
            def length(word: str) -> int:
                return triple(len(word))
        ''').lstrip()
        )
        env = {"PIPELINES_STORE": "", "PIPELINES_DAGS": ""}
        assert re.search(
            r"^words\s+Word lengths, tripled\.$", cli("list", cwd=project, env=env, check=0).stdout, re.MULTILINE
        )
        proc = cli("run", "words", "--param", "text=x yy zzzz", cwd=project, env=env, check=0)
        run_id = RUN_ID.search(proc.stdout).group(1)
        assert re.search(r"^ length\s+processes\s", proc.stdout, re.MULTILINE)
        parquet = project / ".pipelines" / "runs" / run_id / "outputs" / "length.parquet"
        assert f"length: 3 rows → {parquet.relative_to(project)}" in proc.stdout
        assert pq.read_table(parquet).column("length").to_pylist() == [3, 6, 12]
        inspected = cli("inspect", "latest", "length", cwd=project, env=env, check=0).stdout
        assert inspected.startswith(f"{run_id} · words · ok")
        assert "stage length: 3 rows" in inspected
