"""Small things a person reads: messages cut between words, names and keys listed, parameters
described, Ray's own start-up warnings kept out of a run's output."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from pipelines import LoadError, Pipeline
from pipelines.define.loader import find_pipeline
from pipelines.observe.report import _short
from tests.conftest import TEST_DAGS, cli
from tests.executors.helpers import RAY_ENV, skip_unless_only_loopback


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


def test_an_unknown_param_lists_the_valid_keys(tmp_path: Path) -> None:
    proc = cli("run", "cli_squares", "--dags", str(TEST_DAGS), "--store", str(tmp_path), "--param", "count=3", check=2)
    assert "pipeline 'cli_squares' has no parameter 'count'; its parameters: n, offset" in proc.stderr


def test_show_describes_the_parameters() -> None:
    out = cli("show", "cli_squares", "--dags", str(TEST_DAGS), check=0).stdout
    assert "params: n=20, offset=0\n  n: how many numbers\n" in out


@pytest.mark.ray
def test_rays_own_warnings_stay_out_of_a_run(tmp_path: Path) -> None:
    skip_unless_only_loopback()
    pytest.importorskip("ray")
    proc = cli(
        "run",
        "cli_squares",
        "--dags",
        str(TEST_DAGS),
        "--store",
        str(tmp_path),
        "--executor",
        "ray",
        env=RAY_ENV,
        timeout=240,
        check=0,
    )
    assert "Token authentication" not in proc.stdout + proc.stderr
    assert "cli_squares · " in proc.stdout
