"""Deadlines for async items that an item can neither evade nor pass on to its neighbours.

``asyncio.timeout`` misfires in two ways on a loop that many items share:

* an item that swallows ``CancelledError`` goes on running, and whatever it returns after
  its deadline counts as a success;
* an item that blocks the loop (``time.sleep`` in an ``async def``) stalls every item on
  it. When the loop turns again, the *neighbours'* deadlines have passed and they are
  cancelled, while the blocker, which awaits nothing after its call, returns normally.

So an item with a timeout runs as a task of its own and is awaited until its deadline:

* past the deadline it is cancelled and fails with ``ItemTimeout``, whatever it does with the
  cancellation. One that goes on anyway is abandoned: it runs on in the background, its
  result dropped (as a thread item is);
* time the loop spent stalled by *another* task does not count against an item: a
  ``LoopWatch`` per loop beats every 50 ms, and a watchdog thread that sees the beat late
  names the task running on the loop. The stall counts against that task alone, which is
  logged by name while it blocks, and fails with the time it blocked the loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Awaitable
from typing import Any, ClassVar

logger = logging.getLogger("pipelines.run")  # one stable name for the engine, whatever module logs

HEARTBEAT = 0.05  # seconds between the loop's beats
STALL = 0.1  # a beat later than this means the loop was stalled
WARN_AFTER = 1.0  # log a task that has blocked the loop this long
CANCEL_GRACE = 1.0  # how long a cancelled item may take to stop before it is abandoned
KEEP_STALLS = 3600.0  # seconds a stall is remembered


class ItemTimeout(TimeoutError):
    """An item ran past its stage's ``timeout`` (retried like any timeout when ``retries`` allow)."""


class LoopWatch:
    """Who stalls one event loop, and for how long. One per loop: ``LoopWatch.of(loop)``."""

    _watches: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWatch]] = weakref.WeakKeyDictionary()
    _create_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop_ref = weakref.ref(loop)
        self._lock = threading.Lock()
        self._beat = time.monotonic()
        self._suspect: asyncio.Task[Any] | None = None
        self._warned = False
        self._stalls: collections.deque[tuple[float, float, Any]] = collections.deque(maxlen=100_000)
        self._labels: weakref.WeakKeyDictionary[asyncio.Task[Any], str] = weakref.WeakKeyDictionary()
        threading.Thread(target=self._watch, name="pipelines-loop-watch", daemon=True).start()

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> LoopWatch:
        """The watch of ``loop`` (the running one), started on first use."""
        with cls._create_lock:
            watch = cls._watches.get(loop)
            if watch is None:
                watch = cls._watches[loop] = cls(loop)
                loop.call_soon(watch._tick)
        return watch

    def label(self, task: asyncio.Task[Any] | None, text: str) -> None:
        """What to call ``task`` when it blocks the loop (``stage 'x' batch 0 item 3``)."""
        if task is not None:
            self._labels[task] = text

    # -- on the loop ------------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._beat - HEARTBEAT > STALL:
                self._stalls.append((self._beat + HEARTBEAT, now, self._suspect))
                while self._stalls and self._stalls[0][1] < now - KEEP_STALLS:
                    self._stalls.popleft()
            self._beat, self._suspect, self._warned = now, None, False
        loop = self._loop_ref()
        if loop is not None and not loop.is_closed():
            loop.call_later(HEARTBEAT, self._tick)

    # -- on the watchdog thread -----------------------------------------------------------
    def _watch(self) -> None:
        while True:
            time.sleep(HEARTBEAT)
            loop = self._loop_ref()
            if loop is None or loop.is_closed():
                return
            late = time.monotonic() - self._beat - HEARTBEAT
            if late <= STALL:
                continue
            with self._lock:
                if self._suspect is None:
                    self._suspect = asyncio.current_task(loop)  # the task whose step is running now
                suspect, warn = self._suspect, not self._warned and late >= WARN_AFTER
                if warn:
                    self._warned = True
            del loop
            if warn:
                name = self._labels.get(suspect) if suspect is not None else None
                logger.warning(
                    "%s has blocked its event loop for %.1f s: a blocking call in an async def "
                    '(run blocking code on threads: a plain def with kind="io", or '
                    "asyncio.to_thread)",
                    name or "a callback",
                    late,
                )

    # -- questions --------------------------------------------------------------------------
    def _stall_list(self, now: float) -> list[tuple[float, float, Any]]:
        with self._lock:
            stalls = list(self._stalls)
            if now - self._beat - HEARTBEAT > STALL:  # one that ended just now, not yet recorded
                stalls.append((self._beat + HEARTBEAT, now, self._suspect))
        return stalls

    def stalled(self, since: float, until: float, *, by: Any = None, not_by: Any = None) -> float:
        """Seconds between ``since`` and ``until`` the loop was stalled by ``by`` (or by anyone but ``not_by``)."""
        total = 0.0
        for start, end, blocker in self._stall_list(until):
            if end <= since or start >= until:
                continue
            if (by is not None and blocker is not by) or (not_by is not None and blocker is not_by):
                continue
            total += min(end, until) - max(start, since)
        return total


_abandoned: set[asyncio.Task[Any]] = set()  # items that ignored their cancellation, kept until they end


async def run_with_deadline(awaitable: Awaitable[Any], timeout: float, label: str) -> Any:
    """Await ``awaitable`` as a task of its own, for at most ``timeout`` seconds of its own time.

    Raises:
        ItemTimeout: it ran past its deadline: it was cancelled (or abandoned, if it went on),
            or it returned after the deadline; the message says if it blocked the loop.
    """
    loop = asyncio.get_running_loop()
    watch = LoopWatch.of(loop)
    ended: list[float] = []

    async def timed() -> Any:
        try:
            return await awaitable
        finally:
            ended.append(time.monotonic())

    started = time.monotonic()
    task = loop.create_task(timed())
    watch.label(task, label)
    try:
        while not task.done():
            now = time.monotonic()
            remaining = timeout - (now - started - watch.stalled(started, now, not_by=task))
            if remaining <= 0:
                break
            await asyncio.wait({task}, timeout=remaining)
    except asyncio.CancelledError:  # the whole batch is cancelled: so is the item
        task.cancel()
        raise
    if task.done():
        end = ended[0] if ended else time.monotonic()
        if end - started - watch.stalled(started, end, not_by=task) <= timeout:
            return task.result()  # in time: its value, or its own exception
        if not task.cancelled():
            task.exception()  # retrieved: a late failure is superseded by the timeout
    now = time.monotonic()
    blocked = watch.stalled(started, now, by=task)
    abandoned = False
    if not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_GRACE)
        if not task.done():
            abandoned = True
            _abandoned.add(task)
            task.add_done_callback(_forget)
            with contextlib.suppress(AttributeError):  # reported with the item: not again when its loop closes
                task._log_destroy_pending = False  # type: ignore[attr-defined]
    message = f"timed out after {timeout:g} s"
    if blocked >= STALL:
        message += (
            f": it blocked the event loop for {blocked:.1f} s (a blocking call in an async def; the other "
            f"items on the loop were given that time back)"
        )
    if abandoned:
        message += "; it ignored its cancellation and was abandoned (it runs on in the background)"
    raise ItemTimeout(message)


def _forget(task: asyncio.Task[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved
