"""The command line against hostile input: clear one-line errors (exit 2, no traceback) instead
of tracebacks or silence, and files that are not regular files.

Every command-line case runs ``python -m pipelines`` in a real subprocess on a real store.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import Pipeline
from pipelines.cli.commands import max_local_workers
from pipelines.errors import DefinitionError
from stages import files
from tests.conftest import ROOT, cli
from tests.helpers import write_dags

GOOD = '''
    """Doubles five numbers."""
    from pipelines import Pipeline

    pipeline = Pipeline("good")


    @pipeline.source
    def numbers():
        yield from range(5)


    @pipeline.map(over=numbers, kind="io")
    def double(x: int) -> int:
        return 2 * x
'''

EVIL = "evil\x1b]0;PWNED\x07\x1b[2J\u202e[bold red]markup[/bold red] :thumbs_up:"

ESCAPES = f'''
    """Titles with terminal escape sequences in them."""
    from pipelines import Pipeline

    pipeline = Pipeline("escapes")


    @pipeline.source
    def titles():
        yield "plain"
        yield {EVIL!r}


    @pipeline.map(over=titles, kind="io")
    def echo(title: str) -> str:
        return title


    @pipeline.map(over=echo, kind="io")
    def check(title: str) -> str:
        if "evil" in title:
            raise ValueError(f"bad title {{title}}")
        return title
'''

EXITS = '''
    """Calls sys.exit at import."""
    import sys

    from pipelines import Pipeline

    pipeline = Pipeline("exits")

    sys.exit(0)
'''


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *pieces: str) -> str:
    """Exit 2, one ``error:`` line on stderr naming every piece, no traceback."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for piece in pieces:
        assert piece in lines[0], (piece, lines[0])
    return lines[0]


@pytest.fixture
def dags(tmp_path: Path) -> Path:
    return write_dags(tmp_path / "dags", good=GOOD, escapes=ESCAPES, exits=EXITS)


def run(dags: Path, store: Path, *args: str, check: int | None = None) -> subprocess.CompletedProcess[str]:
    return cli(*args, "--dags", str(dags), "--store", str(store), check=check)


def as_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines", *args]


def run_in(prefix: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    return subprocess.run(prefix, cwd=ROOT, env=env, capture_output=True, text=True)


# -- a dags module that exits at import ---------------------------------------------------------


class TestExitAtImport:
    def test_is_a_load_error_naming_the_module(self, dags: Path, store: Path) -> None:
        proc = run(dags, store, "run", "exits")
        assert_one_line_error(proc, "exits.py, line 8", "called sys.exit(0)", "must not exit")
        assert "no runs in" in run(dags, store, "runs", check=0).stdout  # nothing was recorded

    def test_show_says_the_same(self, dags: Path, store: Path) -> None:
        assert_one_line_error(run(dags, store, "show", "exits"), "called sys.exit(0)")


# -- options that are empty, repeated or too big -------------------------------------------------


class TestOptions:
    @pytest.mark.parametrize("option", ["--executor", "--store", "--dags", "--output", "--address"])
    def test_an_empty_value_is_refused(self, dags: Path, tmp_path: Path, option: str) -> None:
        given = {"--dags": str(dags), "--store": str(tmp_path / "s"), option: ""}
        args = [a for pair in given.items() for a in pair]
        proc = cli("run", "good", *args)
        assert_one_line_error(proc, f"{option} is empty")

    def test_an_empty_store_for_runs_is_refused(self) -> None:
        assert_one_line_error(cli("runs", "--store", ""), "--store is empty")

    def test_a_repeated_param_is_refused(self, tmp_path: Path, store: Path) -> None:
        folder = write_dags(
            tmp_path / "p",
            withparams='''
            """Takes a parameter."""
            from pydantic import BaseModel

            from pipelines import Pipeline


            class Params(BaseModel):
                n: int = 3


            pipeline = Pipeline("withparams", params=Params)


            @pipeline.source
            def numbers(params: Params):
                yield from range(params.n)
        ''',
        )
        proc = cli("run", "withparams", "--dags", str(folder), "--store", str(store), "-p", "n=1", "--param", "n=2")
        assert_one_line_error(proc, "--param n is given twice (n=1, n=2)")
        assert not (store / "runs").exists() or not any((store / "runs").iterdir())
        proc = cli("run", "withparams", "--dags", str(folder), "--store", str(store), "-p", "n=2", check=0)
        assert "numbers: 2 rows" in proc.stdout

    def test_too_many_workers_is_refused_with_the_limit(self, dags: Path, store: Path) -> None:
        most = max_local_workers()
        assert most >= 32 and most >= 4 * (os.cpu_count() or 1)
        proc = run(dags, store, "run", "good", "--workers", "10000")
        assert_one_line_error(proc, "--workers 10000", f"at most {most}")
        assert not (store / "runs").exists() or not any((store / "runs").iterdir())

    def test_the_limit_itself_is_accepted(self, dags: Path, store: Path) -> None:
        # the io stage runs on threads: the limit's worth of threads is cheap
        run(dags, store, "run", "good", "--executor", "threads", "--workers", str(max_local_workers()), check=0)


# -- --output, long names, a read-only ledger ----------------------------------------------------


class TestClearErrors:
    def test_output_that_is_a_file(self, dags: Path, store: Path, tmp_path: Path) -> None:
        target = tmp_path / "taken"
        target.write_text("keep me")
        proc = run(dags, store, "run", "good", "--output", str(target))
        assert_one_line_error(proc, f"--output {target} cannot be a folder", "is a file")
        assert target.read_text() == "keep me"
        assert not (store / "runs").exists() or not any((store / "runs").iterdir())  # refused before the run
        proc = run(dags, store, "run", "good", "--output", str(target / "below"))
        assert_one_line_error(proc, f"{target} is a file")

    def test_output_folder_still_works(self, dags: Path, store: Path, tmp_path: Path) -> None:
        run(dags, store, "run", "good", "--output", str(tmp_path / "new" / "out"), check=0)
        assert (tmp_path / "new" / "out" / "double.parquet").is_file()

    @pytest.mark.parametrize("length", [201, 300])
    def test_a_pipeline_name_too_long_for_a_file_name(self, length: int) -> None:
        with pytest.raises(DefinitionError, match=rf"pipeline name p+… is {length} bytes long; names are at most 200"):
            Pipeline("p" * length)

    def test_a_stage_name_too_long(self) -> None:
        pipeline = Pipeline("short")
        with pytest.raises(DefinitionError, match=r"pipeline 'short': stage name s+… is 256 bytes long"):
            pipeline.source(lambda: iter(()), name="s" * 256)
        Pipeline("p" * 200)  # the limit itself is fine

    def test_a_long_name_in_a_dags_module_is_exit_2(self, tmp_path: Path, store: Path) -> None:
        name = "p" * 300
        folder = write_dags(
            tmp_path / "long",
            longname=f'''
            """A long name."""
            from pipelines import Pipeline

            pipeline = Pipeline("{name}")
        ''',
        )
        proc = cli("run", name, "--dags", str(folder), "--store", str(store))
        assert_one_line_error(proc, "is 300 bytes long")


class TestNonRegularFiles:
    def test_a_fifo_is_refused_at_once(self, tmp_path: Path) -> None:
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        with pytest.raises(ValueError, match=r"'pipe' is a FIFO \(named pipe\), not a regular file"):
            files.read_bytes("pipe", root=tmp_path)
        with pytest.raises(ValueError, match=r"is a FIFO"):
            files.read_bytes(fifo)

    def test_a_device_a_socket_and_a_folder_are_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="is a character device"):
            files.read_bytes("/dev/zero")  # would never end
        path = tmp_path / "sock"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        try:
            with pytest.raises(ValueError, match="is a socket"):
                files.read_bytes(path)
        finally:
            server.close()
        with pytest.raises(ValueError, match="is a directory"):
            files.read_bytes(tmp_path)

    def test_regular_files_and_limits_still_work(self, tmp_path: Path) -> None:
        (tmp_path / "a.bin").write_bytes(b"x" * 10)
        assert files.read_bytes("a.bin", root=tmp_path) == b"x" * 10
        with pytest.raises(ValueError, match="10 bytes exceeds the limit of 5"):
            files.read_bytes("a.bin", root=tmp_path, max_bytes=5)
