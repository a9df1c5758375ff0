"""Fault timeouts: an item that runs too long, on asyncio, processes and threads.

Every pipeline has 12 items; FAULT_LOG gets one line per event (``EVENT ITEM PID``).
``fault_async_timeout``  item 3 awaits 30 s; it logs ``cancelled`` when its coroutine is cancelled
``fault_proc_timeout``   item 5 sleeps 30 s (SIGALRM interrupts it); item 9 blocks SIGALRM and
                         sleeps 30 s (only killing its worker stops it)
``fault_thread_timeout`` item 3 sleeps 20 s on a thread, then logs ``finished``
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

from pipelines import Pipeline


def log(event: str, item: int) -> None:
    with open(os.environ["FAULT_LOG"], "a") as f:
        f.write(f"{event} {item} {os.getpid()}\n")


def numbers() -> Iterator[int]:
    yield from range(12)


async def wait(x: int) -> int:
    log("start", x)
    if x == 3:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            log("cancelled", x)
            raise
    log("end", x)
    return x


def nap(x: int) -> int:
    log("start", x)
    if x == 5:
        time.sleep(30)
    elif x == 9:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(30)
    log("end", x)
    return x


def block(x: int) -> int:
    log("start", x)
    if x == 3:
        time.sleep(20)
        log("finished", x)
    log("end", x)
    return x


async_timeout = Pipeline("fault_async_timeout")
async_timeout.source(numbers)
async_timeout.map(wait, over=numbers, timeout=0.5, on_error="skip")

proc_timeout = Pipeline("fault_proc_timeout")
proc_timeout.source(numbers)
proc_timeout.map(nap, over=numbers, kind="cpu", timeout=1, task_size=1, on_error="skip")

thread_timeout = Pipeline("fault_thread_timeout")
thread_timeout.source(numbers)
thread_timeout.map(block, over=numbers, kind="io", timeout=0.5, on_error="skip")
