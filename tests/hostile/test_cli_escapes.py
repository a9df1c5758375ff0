"""Data that tries to drive the terminal: escape sequences, bidi overrides, rich markup and
emoji codes in titles and messages are shown as text by every command, on a pipe and on a
real pseudo-terminal, and in the HTML report.
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
from rich.text import Text

from pipelines.observe.display import printable, safe_console
from tests.conftest import ROOT
from tests.helpers import on_a_pty, write_dags
from tests.hostile.test_cli_options import ESCAPES, as_command, run

SHOWN_EVIL = r"evil\x1b]0;PWNED\x07\x1b[2J\u202e[bold red]markup[/bold red] :thumbs_up:"
RAW = ("\x1b", "\x07", "\u202e")  # none of these may reach a person's screen


@pytest.fixture
def dags(tmp_path: Path) -> Path:
    return write_dags(tmp_path / "dags", escapes=ESCAPES)


def assert_clean(proc: subprocess.CompletedProcess[str]) -> str:
    shown = proc.stdout + proc.stderr
    assert not [c for c in RAW if c in shown], ascii(shown)
    assert "Traceback" not in proc.stderr, proc.stderr  # a crash; inspect shows the item's own on stdout
    return shown


class TestPrintable:
    def test_controls_and_bidi_become_escapes(self) -> None:
        assert printable("a\x1b[31mb\x07\x9b\u202e\u2066c\x7f") == r"a\x1b[31mb\x07\x9b\u202e\u2066c\x7f"
        assert printable("one\ntwo\r\tthree") == r"one\ntwo\r\tthree"
        assert printable("one\ntwo\tthree\x1b\r", multiline=True) == "one\ntwo\tthree\\x1b\\r"

    def test_printable_text_is_left_alone(self) -> None:
        assert printable("naïve ✓ 日本 👍🏽 [x] :y:") == "naïve ✓ 日本 👍🏽 [x] :y:"

    def test_the_console_escapes_what_a_caller_forgot(self) -> None:
        """The safety net: text reaching a SafeConsole unescaped is escaped there, while rich's
        own colours still reach a terminal."""
        out = io.StringIO()
        console = safe_console(file=out, force_terminal=True, width=200, color_system="standard")
        console.print(Text("raw \x1b]0;PWNED\x07 :thumbs_up: \u202eend", style="red"))
        shown = out.getvalue()
        assert "\x1b]0;" not in shown and "\x07" not in shown and "\u202e" not in shown
        assert r"raw \x1b]0;PWNED" in shown and r":thumbs_up: \u202eend" in shown  # rich drops the bell itself
        assert "\x1b[31m" in shown  # the console's own style


class TestCommands:
    def test_run_error_lines_and_the_summary(self, dags: Path, store: Path) -> None:
        shown = assert_clean(run(dags, store, "run", "escapes", check=1))
        assert f"ValueError: bad title {SHOWN_EVIL}" in shown  # markup and emoji codes stay text

    def test_inspect_runs_list_and_show(self, dags: Path, store: Path) -> None:
        run(dags, store, "run", "escapes", check=1)
        shown = assert_clean(run(dags, store, "inspect", "latest", "check", check=0))
        assert f"ValueError: bad title {SHOWN_EVIL} (attempts: 1)" in shown  # the error line
        assert f"    ValueError: bad title {SHOWN_EVIL}" in shown  # the traceback's last line
        shown = assert_clean(run(dags, store, "inspect", "latest", "echo", "--rows", "2", check=0))
        assert r"│ evil\x1b]0;PWNED\x07\x1b[2J\u202e[bold red]markup[/bold red…" in shown  # a cell, cut at 60
        assert_clean(run(dags, store, "inspect", "latest", check=0))
        assert_clean(run(dags, store, "runs", check=0))

    def test_docstrings_in_list_and_show(self, tmp_path: Path, store: Path) -> None:
        folder = write_dags(
            tmp_path / "doc",
            titled='''
            """Title \\x1b]0;PWNED\\x07 with \\u202e an override."""
            from pipelines import Pipeline

            pipeline = Pipeline("titled")


            @pipeline.source
            def numbers():
                """Numbers \\x1b[2J clear."""
                yield from range(2)
        ''',
        )
        shown = assert_clean(run(folder, store, "list", check=0))
        assert r"titled  Title \x1b]0;PWNED\x07 with \u202e an override." in shown
        for fmt in ("tree", "table"):
            shown = assert_clean(run(folder, store, "show", "titled", "--format", fmt, check=0))
            assert r"Title \x1b]0;PWNED\x07" in shown

    def test_the_html_report(self, dags: Path, store: Path, tmp_path: Path) -> None:
        run(dags, store, "run", "escapes", check=1)
        path = tmp_path / "report.html"
        run(dags, store, "report", "latest", "-o", str(path), check=0)
        html = path.read_text()
        assert not [c for c in RAW if c in html]
        assert r"bad title evil\x1b]0;PWNED\x07\x1b[2J\u202e[bold red]markup[/bold red]" in html


def test_on_a_terminal_too(dags: Path, store: Path) -> None:
    """Live progress, log records and the outcome line on a real pseudo-terminal."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400", "TERM": "xterm"}
    code, shown = on_a_pty(
        as_command("run", "escapes", "--dags", str(dags), "--store", str(store), "-v"), cwd=ROOT, env=env
    )
    assert code == 1
    assert "PWNED" in shown
    assert "\x1b]0;" not in shown and "\x07" not in shown and "\u202e" not in shown  # no OSC, no bell
    assert "\x1b[2J" not in shown  # the data's clear-screen never reaches the terminal
    assert r"\x1b]0;PWNED\x07" in shown
