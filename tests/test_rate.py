"""Rate limits: ``parse_rate``'s forms and errors, and the token bucket's rate.

The bucket's rate is measured on a clock the test drives (``time.monotonic`` and the sleeps
are replaced), so it is exact and does not depend on how loaded the machine is; the one
real-time test asserts only a lower bound.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import types

import pytest

from pipelines.define import rate
from pipelines.define.rate import RateLimiter, parse_rate


@pytest.mark.parametrize(
    ("text", "per_second"),
    [
        ("50/s", 50.0),
        ("600/min", 10.0),
        ("1000/h", 1000 / 3600),
        ("2/5s", 0.4),
        ("3/2min", 3 / 120),
        ("1.5/sec", 1.5),
        (" 30 / minute ", 0.5),
        ("10/S", 10.0),
        ("7/second", 7.0),
        ("36/hour", 0.01),
    ],
)
def test_parse_rate_reads_items_per_second(text, per_second):
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["fast", "50", "50/", "/s", "50/fortnight", "50/s/s", "-1/s", "1e3/s", ""])
def test_parse_rate_names_the_bad_text_and_the_forms_it_takes(text):
    with pytest.raises(ValueError, match=r"rate .* is not like '50/s', '600/min' or '1000/h'") as info:
        parse_rate(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", ["0/s", "0.0/min"])
def test_parse_rate_refuses_a_zero_rate(text):
    with pytest.raises(ValueError, match="must be positive"):
        parse_rate(text)


class Clock:
    """A monotonic clock that moves only when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(rate, "time", clock)
    monkeypatch.setattr(rate, "asyncio", types.SimpleNamespace(sleep=clock.async_sleep))
    return clock


def times_of(limiter: RateLimiter, clock: Clock, n: int) -> list[float]:
    """When each of ``n`` back-to-back acquisitions went through."""
    out = []
    for _ in range(n):
        limiter.acquire()
        out.append(clock.now)
    return out


def test_acquisitions_are_spaced_at_the_rate(clock):
    start = clock.now
    stamps = times_of(RateLimiter(50), clock, 101)
    assert stamps[0] == start  # the first goes at once
    assert stamps[-1] - start == pytest.approx(2.0)  # 100 more at 50/s
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps == pytest.approx([0.02] * 100)


def test_a_burst_goes_at_once_and_then_the_rate_holds(clock):
    start = clock.now
    stamps = times_of(RateLimiter(10, burst=5), clock, 15)
    assert stamps[:5] == [start] * 5
    assert stamps[5:] == pytest.approx([start + 0.1 * i for i in range(1, 11)])


def test_an_idle_bucket_refills_up_to_its_burst_only(clock):
    limiter = RateLimiter(10, burst=3)
    times_of(limiter, clock, 3)  # empty it
    clock.now += 60  # a minute idle would be 600 tokens without the cap
    start = clock.now
    stamps = times_of(limiter, clock, 6)
    assert stamps[:3] == [start] * 3
    assert stamps[3:] == pytest.approx([start + 0.1, start + 0.2, start + 0.3])


def test_a_burst_below_one_is_one(clock):
    limiter = RateLimiter(4, burst=0)
    assert limiter.burst == 1.0
    start = clock.now
    assert times_of(limiter, clock, 3) == pytest.approx([start, start + 0.25, start + 0.5])


def test_the_async_acquire_keeps_the_same_rate(clock):
    limiter = RateLimiter(20)
    start = clock.now

    async def many() -> list[float]:
        stamps = []
        for _ in range(21):
            await limiter.acquire_async()
            stamps.append(clock.now)
        return stamps

    stamps = asyncio.run(many())
    assert stamps[0] == start
    assert stamps[-1] - start == pytest.approx(1.0)
    assert clock.sleeps == pytest.approx([0.05] * 20)


def test_threads_that_ask_at_once_get_one_slot_each(clock):
    """Reservations are taken under a lock: n threads at the same instant wait 0, 1/r, 2/r, ..."""
    limiter = RateLimiter(100)
    delays: list[float] = []
    barrier = threading.Barrier(8)

    def ask() -> None:
        barrier.wait()
        for _ in range(10):
            delays.append(limiter._reserve())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(delays) == pytest.approx([i / 100 for i in range(80)])


def test_the_real_clock_is_never_faster_than_the_rate():
    limiter = RateLimiter(50)
    start = time.monotonic()
    for _ in range(11):
        limiter.acquire()
    assert time.monotonic() - start >= 10 / 50 - 0.005  # ten waits of 20 ms (sleep may round a hair short)


def test_a_workers_share_of_the_rate_is_its_own_limiter():
    """A forked worker inherits the driver's per-process cache: the limiter an in-process run
    made for the whole rate must not serve a worker allowed half of it."""
    from pipelines import Pipeline
    from pipelines._engine.calls import _limiter

    pipeline = Pipeline("shares")

    @pipeline.source
    def numbers() -> list[int]:
        return [1]

    @pipeline.map(over=numbers, rate="20/s")
    def limited(x: int) -> int:
        return x

    whole, half = _limiter(pipeline["limited"], 1.0), _limiter(pipeline["limited"], 0.5)
    assert whole is not None and half is not None
    assert (whole.per_second, half.per_second) == (20.0, 10.0)
    assert _limiter(pipeline["limited"], 0.5) is half
