"""Items that misbehave fail alone: timeouts they cannot evade or pass on, exceptions that cannot be printed.

* An async item that swallows ``CancelledError`` is still recorded as timed out once its
  deadline passed, and the run does not wait for it.
* An async item that blocks the event loop (``time.sleep`` in an ``async def``) fails with the
  time it blocked the loop; its neighbours on that loop, which could not run meanwhile, do not.
* An exception whose ``__str__`` and ``__repr__`` raise fails its own item, described safely,
  and not the other items of its task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pipelines
from pipelines import Pipeline, RunStatus

N = 6
CULPRIT = 2


def numbers() -> Iterator[int]:
    yield from range(N)


# -- an item that swallows its cancellation -----------------------------------------------------
async def swallow(x: int) -> int:
    """Item 2 ignores every cancellation until the test drops a file (after the run returned)."""
    if x == CULPRIT:
        release = Path(os.environ["RELEASE_FILE"])
        while not release.exists():
            with contextlib.suppress(asyncio.CancelledError):  # swallowed
                await asyncio.sleep(0.05)
        Path(os.environ["RELEASED_LOG"]).write_text("returned")
    return x


swallowing = Pipeline("hostile_swallowing")
swallowing.source(numbers)
swallowing.map(swallow, over=numbers, timeout=1, on_error="skip", task_size=N)


@pytest.mark.parametrize("executor", ["asyncio", "processes"])
def test_an_item_that_swallows_its_cancellation_times_out_anyway(
    executor: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, released = tmp_path / "release", tmp_path / "released"
    monkeypatch.setenv("RELEASE_FILE", str(release))
    monkeypatch.setenv("RELEASED_LOG", str(released))
    try:
        result = pipelines.run(swallowing, store=tmp_path / "store", executor=executor)
        assert not released.exists()  # the run did not wait for the item to give up
    finally:
        release.touch()
    assert result.status is RunStatus.PARTIAL, result.error
    (timed_out,) = result.failures
    assert (timed_out.item, timed_out.error_type) == (CULPRIT, "ItemTimeout")
    assert timed_out.message.startswith("timed out after 1 s") and "ignored its cancellation" in timed_out.message
    assert result.table("swallow")["swallow"].to_pylist() == [x for x in range(N) if x != CULPRIT]


# -- an item that blocks the event loop ----------------------------------------------------------
async def hog(x: int) -> int:
    """Item 2 blocks the loop for 4 s; the others need the loop for a moment, twice."""
    if x == CULPRIT:
        await asyncio.sleep(0)
        time.sleep(float(os.environ.get("HOG_SECONDS", "4")))
        return x
    await asyncio.sleep(0.2)
    await asyncio.sleep(0.2)
    return x


hogging = Pipeline("hostile_hogging")
hogging.source(numbers)
hogging.map(hog, over=numbers, timeout=1.5, on_error="skip", task_size=N)

hogging_untimed = Pipeline("hostile_hogging_untimed")
hogging_untimed.source(numbers)
hogging_untimed.map(hog, over=numbers, on_error="skip", task_size=N)


@pytest.mark.parametrize("executor", ["asyncio", "processes"])
def test_the_item_that_blocks_the_loop_fails_and_its_neighbours_do_not(
    executor: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        result = pipelines.run(hogging, store=tmp_path / "store", executor=executor)
    assert result.status is RunStatus.PARTIAL, result.error
    assert [(e.item, e.error_type) for e in result.failures] == [(CULPRIT, "ItemTimeout")]
    (blocker,) = result.failures
    assert "it blocked the event loop for" in blocker.message, blocker.message
    assert result.table("hog")["hog"].to_pylist() == [x for x in range(N) if x != CULPRIT]
    if executor == "asyncio":  # the driver's own loop: its watchdog names the blocker while it blocks
        assert any("item 2 has blocked its event loop" in r.getMessage() for r in caplog.records), caplog.text


def test_a_blocking_item_without_a_timeout_is_named_and_nothing_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        result = pipelines.run(hogging_untimed, store=tmp_path / "store", executor="asyncio")
    assert result.status is RunStatus.OK, result.failures
    assert result.table("hog")["hog"].to_pylist() == list(range(N))
    warning = next(r.getMessage() for r in caplog.records if "has blocked its event loop" in r.getMessage())
    assert warning.startswith("stage 'hog' batch 0 item 2 has blocked its event loop"), warning


# -- exceptions that cannot be printed ----------------------------------------------------------
class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no __str__")

    def __repr__(self) -> str:
        raise RuntimeError("no __repr__")


class SlipperyTransient(Unprintable):
    """Asks for retries with an attribute that raises when read."""

    @property
    def retryable(self) -> bool:
        raise RuntimeError("no answer")


def bad(x: int) -> int:
    if x == CULPRIT:
        raise Unprintable()
    if x == CULPRIT + 1:
        raise SlipperyTransient()
    return x


async def bad_async(x: int) -> int:
    await asyncio.sleep(0)
    return bad(x)


unprintable = Pipeline("hostile_unprintable")
unprintable.source(numbers)
unprintable.map(bad, over=numbers, on_error="skip", retries=2, task_size=N)
unprintable.map(bad_async, over=numbers, on_error="skip", retries=2, task_size=N)


@pytest.mark.parametrize("executor", ["inline", "threads", "processes"])
def test_an_exception_whose_str_raises_fails_only_its_item(executor: str, tmp_path: Path) -> None:
    result = pipelines.run(unprintable, store=tmp_path / "store", executor=executor)
    assert result.status is RunStatus.PARTIAL, result.error
    failed = {(e.stage, e.item): e for e in result.failures}
    culprits = {CULPRIT, CULPRIT + 1}
    assert set(failed) == {(stage, i) for stage in ("bad", "bad_async") for i in culprits}
    for (_, item), error in failed.items():
        assert error.input == str(item)  # its own input, not None
        assert error.attempts == 1  # a retry decision that raises means no retry
        assert error.error_type in ("Unprintable", "SlipperyTransient")
        assert error.message == f"<{error.error_type}: its __str__ raised RuntimeError>"
        assert "Traceback" in error.traceback and "in bad" in error.traceback
    for stage in ("bad", "bad_async"):
        assert result.table(stage)[stage].to_pylist() == [x for x in range(N) if x not in culprits]
