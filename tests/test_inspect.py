"""``inspect RUN STAGE`` shows each failed item's whole traceback, chained causes included,
with the user's frames in view and the engine's folded (``--debug`` shows those too)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import TEST_DAGS, cli


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    store = tmp_path_factory.mktemp("store")
    proc = cli("run", "deep_failure", "--dags", str(TEST_DAGS), "--store", str(store), check=0)
    run_id = proc.stdout.split()[1]
    return store, run_id


def inspect(deep: tuple[Path, str], *args: str) -> str:
    store, run_id = deep
    return cli("inspect", run_id, "parse", "--store", str(store), *args, check=0).stdout


def test_every_frame_of_the_chain_from_the_users_code(deep: tuple[Path, str]) -> None:
    out = inspect(deep)
    assert "2 failed items:" in out
    first = out[out.index("item 2: ValueError: item 2 has no key") : out.index("item 5: ValueError")]
    # the cause, then the exception it became, each with the user's frames in the order they were called
    order = [
        "in helper1",
        "in helper2",
        "KeyError: 'key-2'",
        "The above exception was the direct cause",
        "in parse",
        "in helper1",
        "ValueError: item 2 has no key",
    ]
    at = [first.index("Traceback (most recent call last)")]
    for text in order:
        at.append(first.index(text, at[-1]))
    assert 'return {}[f"key-{x}"]' in first and "raise ValueError" in first
    assert "pipelines/_engine/" not in first  # how the engine called the stage is folded into one line
    assert re.search(r"\[\d+ frames of pipelines or libraries; --debug shows them\]", first), first


def test_debug_shows_the_engine_frames_too(deep: tuple[Path, str]) -> None:
    out = inspect(deep, "--debug")
    assert "pipelines/_engine/calls.py" in out and "--debug shows" not in out


def test_rows_says_how_many_items_to_show(deep: tuple[Path, str]) -> None:
    out = inspect(deep, "--rows", "1")
    assert "2 failed items; the first 1 (--rows N for more):" in out
    assert "item 2: ValueError" in out and "item 5: ValueError" not in out


def test_the_schema_shows_no_engine_metadata(deep: tuple[Path, str]) -> None:
    out = inspect(deep)
    assert "schema:\n  parse: int64\n" in out and "pipelines." not in out.split("schema:")[1].split("\n\n")[0]
