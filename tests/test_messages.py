"""Small things a person reads: messages cut between words, names and keys listed, parameters
described, Ray's own start-up warnings kept out of a run's output."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from pipelines import LoadError, Pipeline
from pipelines.define.loader import find_pipeline
from pipelines.observe.report import _short
from tests.conftest import ROOT, TEST_DAGS, cli
from tests.executors.helpers import skip_unless_only_loopback
from tests.helpers import write_dags


def test_a_long_message_is_cut_between_words() -> None:
    message = "Could not convert 'x' with type str: tried to convert to int64 " * 6
    short = _short(message)
    assert short.endswith(" … (inspect shows it whole)")
    kept = short.removesuffix(" … (inspect shows it whole)")
    assert message.startswith(kept) and message[len(kept)] == " "  # the next character starts a new word


def test_a_module_without_the_pipeline_asked_for_says_what_it_defines() -> None:
    module = types.ModuleType("modname")
    module.first = Pipeline("first")  # type: ignore[attr-defined]
    module.second = Pipeline("second")  # type: ignore[attr-defined]
    wanted = "module modname defines no Pipeline named 'modname'; it defines: first, second"
    with pytest.raises(LoadError, match=wanted):
        find_pipeline(module, "modname")


def test_run_modname_says_which_pipelines_the_module_defines(tmp_path: Path) -> None:
    """The command line, as the issue met it: ``run modname`` of a module whose pipelines have other names."""
    dags = write_dags(
        tmp_path / "dags",
        modname="""
        from pipelines import Pipeline

        first = Pipeline("first")
        second = Pipeline("second")
        """,
    )
    proc = cli("run", "modname", "--dags", str(dags), "--store", str(tmp_path / "store"), check=2)
    assert "error: module dags.modname defines no Pipeline named 'modname'; it defines: first, second" in proc.stderr


def test_an_unknown_param_lists_the_valid_keys(tmp_path: Path) -> None:
    proc = cli("run", "cli_squares", "--dags", str(TEST_DAGS), "--store", str(tmp_path), "--param", "count=3", check=2)
    assert "pipeline 'cli_squares' has no parameter 'count'; its parameters: n, offset" in proc.stderr


def test_show_describes_the_parameters() -> None:
    out = cli("show", "cli_squares", "--dags", str(TEST_DAGS), check=0).stdout
    assert "params: n=20, offset=0\n  n: how many numbers\n" in out


def _ray_run(store: Path, home: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """A run on a fresh local Ray, its authentication mode unset as a user's would be (Ray then
    turns token authentication on and says so; its token goes to ``home``)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env.update(RAY_USAGE_STATS_ENABLED="0", HOME=str(home), COLUMNS="200", PYTHONUNBUFFERED="1")
    argv = ["run", "cli_squares", "--dags", str(TEST_DAGS), "--store", str(store), "--executor", "ray", *flags]
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.ray
def test_rays_own_start_up_notes_stay_out_of_a_run_and_show_with_v(tmp_path: Path) -> None:
    skip_unless_only_loopback()
    pytest.importorskip("ray")
    quiet = _ray_run(tmp_path / "quiet", tmp_path / "home")
    assert quiet.stderr == ""
    assert "Token authentication" not in quiet.stdout and "8.8.8.8" not in quiet.stdout
    assert "cli_squares · " in quiet.stdout
    # the same notes are there to be kept out: -v shows them (the Python one and the C++ one)
    shown = _ray_run(tmp_path / "verbose", tmp_path / "home", "-v")
    assert "Token authentication is enabled" in shown.stderr
    assert "8.8.8.8" in shown.stderr
    assert "Started a local Ray instance" in shown.stderr
    assert "session folder" not in shown.stdout + shown.stderr


@pytest.mark.ray
def test_with_vv_rays_session_folder_and_its_logs_are_kept(tmp_path: Path) -> None:
    skip_unless_only_loopback()
    pytest.importorskip("ray")
    proc = _ray_run(tmp_path / "store", tmp_path / "home", "-vv")
    found = re.search(r"Ray's session folder \(its processes' logs\) is kept: (\S+)", proc.stdout + proc.stderr)
    assert found, proc.stdout + proc.stderr
    kept = Path(found.group(1))
    try:
        assert list(kept.glob("session_*/logs/raylet*")), sorted(p.name for p in kept.rglob("*"))[:20]
    finally:
        shutil.rmtree(kept, ignore_errors=True)
