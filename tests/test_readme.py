"""The README's code runs: its Python blocks, and its ``python -m pipelines`` commands.

The rules, so that a block is never silently left out:

* a ``python`` block whose first line is ``# path/file.py`` shows that file: its text must
  be in the file, verbatim (the file itself is run by its own tests);
* every other ``python`` block runs as a script, in a fresh interpreter and a scratch folder
  with its own store, and so do the ``test_*`` functions it defines; an HTML comment right
  above it may say ``<!-- readme: continue -->`` (part of the previous block's script) or
  ``<!-- readme: skip because ... -->`` (with the reason);
* a block marked ``<!-- readme: output of python -m pipelines ... -->`` is exactly what that
  command prints today (the ``ingest`` DAG drawn by ``show``);
* in ``sh`` blocks, every ``python -m pipelines`` line runs (exit code 0) unless the block
  is marked ``skip``; other lines are commands this test cannot run (``make``, ``ray start``)
  and must be in a skipped block.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"(?:<!-- readme: (?P<mark>[^>]*?) -->\n)?^```(?P<lang>\w*)\n(?P<code>.*?)^```$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    mark: str  # "", "continue", "skip because ..."
    line: int

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"

    @property
    def shown_file(self) -> str | None:
        first = self.code.split("\n", 1)[0]
        match = re.fullmatch(r"# ([\w./-]+\.py)", first)
        return match.group(1) if match else None


def blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(m["lang"], m["code"], (m["mark"] or "").strip(), text.count("\n", 0, m.start("code")) + 1)
        for m in FENCE.finditer(text)
    ]


PYTHON = [b for b in blocks() if b.lang == "python"]
SHELL = [b for b in blocks() if b.lang == "sh"]


def test_marks_are_known() -> None:
    for block in blocks():
        assert block.mark in ("", "continue") or block.mark.startswith(
            ("skip because ", "output of python -m pipelines ")
        ), (block.id, block.mark)


@pytest.mark.parametrize("block", [b for b in PYTHON if b.shown_file], ids=lambda b: b.id)
def test_shown_file_is_verbatim(block: Block) -> None:
    path = ROOT / block.shown_file
    assert path.exists(), f"{block.id} shows {block.shown_file}, which does not exist"
    body = block.code.split("\n", 1)[1]
    source = path.read_text()
    for chunk in body.split("\n...\n"):  # a line of "..." leaves out part of the file
        assert chunk.strip("\n") in source, f"{block.id}: this part is not in {block.shown_file}:\n{chunk}"


def _runnable_groups() -> list[list[Block]]:
    groups: list[list[Block]] = []
    for block in PYTHON:
        if block.shown_file or block.mark.startswith("skip"):
            continue
        if block.mark == "continue":
            assert groups, f"{block.id} continues nothing"
            groups[-1].append(block)
        else:
            groups.append([block])
    return groups


# appended to a block that defines pytest tests: run them as pytest would, each with its own tmp_path
RUN_TESTS = """
import inspect as _inspect, pathlib as _pathlib, tempfile as _tempfile
for _name, _test in list(globals().items()):
    if _name.startswith("test_") and callable(_test):
        _wanted = "tmp_path" in _inspect.signature(_test).parameters
        _test(**({"tmp_path": _pathlib.Path(_tempfile.mkdtemp(dir="."))} if _wanted else {}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("group", _runnable_groups(), ids=lambda g: g[0].id)
def test_python_block_runs(group: list[Block], tmp_path: Path) -> None:
    """Each block (with its continuations) runs as a script would: a fresh interpreter, a scratch
    folder, the repository importable (``from dags.process_pool import pipeline``)."""
    script = tmp_path / "readme_block.py"
    script.write_text("\n\n".join(block.code for block in group) + RUN_TESTS)
    env = {**os.environ, "PIPELINES_STORE": str(tmp_path / "store"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{group[0].id}:\n{proc.stdout}\n{proc.stderr}"
    for block in group:  # a printed value the block announces in a comment ("# 1,000") must be right
        for expected in re.findall(r"print\(.*\)\s+# (?:prints |→ )(.+)$", block.code, re.M):
            assert expected.strip() in proc.stdout, f"{block.id}: expected {expected!r} in {proc.stdout!r}"


def _commands(block: Block) -> list[str]:
    lines = [ln.split(" #", 1)[0].strip() for ln in block.code.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def test_shell_blocks_are_runnable_or_skipped() -> None:
    for block in SHELL:
        if block.mark.startswith("skip"):
            continue
        for command in _commands(block):
            assert command.startswith("python -m pipelines "), f"{block.id}: cannot run {command!r}; mark the block"


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in SHELL if not b.mark.startswith("skip")], ids=lambda b: b.id)
def test_shell_block_runs(block: Block, tmp_path: Path) -> None:
    """Run each command as the README says, through a shell, from a scratch folder with the repository's dags."""
    env = {
        **os.environ,
        "PIPELINES_STORE": str(tmp_path / "store"),
        "PIPELINES_DAGS": str(ROOT / "dags"),
        "COLUMNS": "200",
    }
    for command in _commands(block):
        line = shlex.quote(sys.executable) + command.removeprefix("python")
        proc = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{block.id}: {command}\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize("block", [b for b in blocks() if b.mark.startswith("output of ")], ids=lambda b: b.id)
def test_shown_output_is_current(block: Block) -> None:
    argv = [sys.executable, *shlex.split(block.mark.removeprefix("output of "))[1:]]
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout == block.code, (
        f"{block.id} is out of date; {block.mark.removeprefix('output of ')} prints:\n{proc.stdout}"
    )


def _commands_and_options() -> dict[str, list[tuple[str, ...]]]:
    """Each command of ``python -m pipelines`` with its options (each as its spellings, ``-q``
    and ``--quiet``), as ``--help`` lists them; "" holds the options before a command."""
    import argparse

    from pipelines.cli.commands import build_parser

    def options(p: argparse.ArgumentParser) -> list[tuple[str, ...]]:
        return [tuple(a.option_strings) for a in p._actions if a.option_strings and "--help" not in a.option_strings]

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": options(parser), **{name: options(command) for name, command in sub.choices.items()}}


def test_every_command_and_option_is_in_the_readme() -> None:
    """What ``--help`` offers, the README documents: each command as ``python -m pipelines NAME``
    in a block, each option by one of its spellings."""
    text = README.read_text()
    code = "\n".join(b.code for b in blocks())
    missing = []
    for command, options in _commands_and_options().items():
        if command and f"python -m pipelines {command}" not in code:
            missing.append(command)
        for spellings in options:
            if not any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text) for o in spellings):
                missing.append(f"{command} {spellings[0]}".strip())
    assert not missing, f"not in the README: {missing}"
