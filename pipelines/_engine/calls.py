"""Calling a stage function on items: retries, timeouts, rate limits and async concurrency.

Each failure is recorded per item (``ItemError``) and never raised, so that one bad item
fails alone. Per-process caches hold one semaphore per stage per loop and one rate limiter
per stage.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines._engine.async_deadline import ItemTimeout, LoopWatch, run_with_deadline
from pipelines._engine.identity import IdentityCache
from pipelines.define import retry
from pipelines.define.rate import RateLimiter, parse_rate
from pipelines.store.ledger import ItemError

if TYPE_CHECKING:
    from pipelines.define.model import Stage

INPUT_REPR_LIMIT = 500


class ItemCalls:
    """Runs the stage function on single items; collects errors instead of raising."""

    def __init__(self, stage: Stage, batch: int, rate_share: float = 1.0) -> None:
        self.stage = stage
        self.batch = batch
        self.errors: list[ItemError] = []
        self.limiter = _limiter(stage, rate_share)
        self.positional = stage.input_args[0] == _first_param(stage.fn)

    def _call(self, value: Any, kwargs: dict[str, Any]) -> Any:
        fn, stage = self.stage.fn, self.stage
        result = fn(value, **kwargs) if self.positional else fn(**{stage.input_args[0]: value}, **kwargs)
        if stage.granularity == "flat_map" and not inspect.isasyncgen(result) and not inspect.isawaitable(result):
            result = list(result)
        return result

    def run_all(self, ids: np.ndarray, values: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        """Every item's result (``None`` for failed ones, whose errors are in ``self.errors``).

        With no retries, timeout or rate limit, the function runs in a plain comprehension,
        as fast as a hand-written loop; only if an item raises is the batch redone item by
        item to find and record the failures.
        """
        stage = self.stage
        if stage.retries == 0 and stage.timeout is None and self.limiter is None and stage.granularity == "map":
            fn = stage.fn
            try:
                if self.positional and not kwargs:
                    return [fn(v) for v in values]
                if self.positional:
                    return [fn(v, **kwargs) for v in values]
            except Exception:
                pass
        return [self.run_sync(i, v, kwargs) for i, v in zip(ids.tolist(), values, strict=True)]

    def run_sync(self, item: int, value: Any, kwargs: dict[str, Any]) -> Any:
        def attempt() -> Any:
            if self.limiter is not None:
                self.limiter.acquire()
            if self.stage.timeout is None:
                return self._call(value, kwargs)
            return call_with_timeout(self._call, (value, kwargs), self.stage.timeout)

        out = with_retries(self.stage, attempt)
        if out.error is not None:
            self.errors.append(item_error(self.stage, self.batch, item, out.error, out.attempts, value))
        return out.value

    async def run_async(self, item: int, value: Any, kwargs: dict[str, Any]) -> Any:
        semaphore = _semaphore(self.stage)

        async def attempt() -> Any:
            async with semaphore:
                if self.limiter is not None:
                    await self.limiter.acquire_async()
                label = f"stage {self.stage.name!r} batch {self.batch} item {item}"
                result = self._call(value, kwargs)
                if inspect.isasyncgen(result):
                    return await with_timeout(_collect(result), self.stage.timeout, label)
                out = await with_timeout(result, self.stage.timeout, label)
                return list(out) if self.stage.granularity == "flat_map" else out

        out = await with_retries_async(self.stage, attempt)
        if out.error is not None:
            self.errors.append(item_error(self.stage, self.batch, item, out.error, out.attempts, value))
        return out.value


@dataclass(frozen=True, slots=True)
class Outcome:
    """The last attempt's value, or its error (``None`` when it succeeded), and how many were made."""

    value: Any
    error: Exception | None
    attempts: int


def with_retries(stage: Stage, attempt: Callable[[], Any]) -> Outcome:
    """Call ``attempt`` until it succeeds, or fails in a way or as often as the stage does not retry."""
    n = 0
    while True:
        try:
            return Outcome(attempt(), None, n + 1)
        except Exception as exc:
            if n < stage.retries and retryable(exc, stage.retry_on):
                time.sleep(retry_delay(n, exc))
                n += 1
                continue
            return Outcome(None, exc, n + 1)


async def with_retries_async(stage: Stage, attempt: Callable[[], Awaitable[Any]]) -> Outcome:
    """``with_retries`` for a coroutine function: the waits between attempts do not block the loop."""
    n = 0
    while True:
        try:
            return Outcome(await attempt(), None, n + 1)
        except Exception as exc:
            if n < stage.retries and retryable(exc, stage.retry_on):
                await asyncio.sleep(retry_delay(n, exc))
                n += 1
                continue
            return Outcome(None, exc, n + 1)


async def _collect(agen: Any) -> list[Any]:
    return [x async for x in agen]


async def with_timeout(awaitable: Any, timeout: float | None, label: str) -> Any:
    """Await an item within its stage's timeout (see ``async_deadline``); the loop's watch names it if it blocks."""
    if timeout is not None:
        return await run_with_deadline(awaitable, timeout, label)
    LoopWatch.of(asyncio.get_running_loop()).label(asyncio.current_task(), label)
    return await awaitable


def item_error(stage: Stage, batch: int, item: int | None, exc: BaseException, attempts: int, value: Any) -> ItemError:
    return ItemError(
        stage=stage.name,
        batch=batch,
        item=item,
        error_type=type(exc).__name__,
        message=describe_exception(exc),
        traceback=_format_traceback(exc),
        attempts=attempts,
        input=_short_repr(value) if item is not None else None,
    )


def describe_exception(exc: BaseException) -> str:
    """``str(exc)``, or its type's name; never raises, whatever the exception's ``__str__`` does.

    An item's exception is user code: a ``__str__`` (or ``__repr__``) that raises must fail
    that item, described safely, and not the task that records it (and its innocent items).
    """
    try:
        text = str(exc)
    except Exception as failure:
        try:
            text = repr(exc)
        except Exception:
            return f"<{type(exc).__name__}: its __str__ raised {type(failure).__name__}>"
    return text or type(exc).__name__


def _format_traceback(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except Exception as failure:
        return f"{type(exc).__name__} (its traceback could not be formatted: {type(failure).__name__})"


def retryable(exc: BaseException, predicate: Callable[[BaseException], bool] | None) -> bool:
    """Whether to retry; a predicate (or an exception attribute it reads) that raises means no."""
    try:
        return bool(retry.should_retry(exc, predicate))
    except Exception:
        return False


def retry_delay(attempt: int, exc: BaseException) -> float:
    try:
        return retry.delay(attempt, exc)
    except Exception:
        return retry.delay(attempt)


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= INPUT_REPR_LIMIT else text[: INPUT_REPR_LIMIT - 3] + "..."


def call_with_timeout(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    """Call ``fn(*args)``, giving up after ``timeout`` seconds.

    In a process's main thread (a process-pool worker, or the driver for ``inline``) a
    SIGALRM interrupts the call itself. A thread cannot be interrupted in Python: there the
    call runs on a helper thread that is abandoned on timeout (it finishes in the background
    and its result is dropped); the item is reported as timed out either way.
    """
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _call_with_alarm(fn, args, timeout)
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="pipelines-timeout", daemon=True).start()
    if not done.wait(timeout):
        raise ItemTimeout(
            f"timed out after {timeout:g} s (the call was abandoned on its thread, which runs on until it returns)"
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


def _call_with_alarm(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    def expire(signum: int, frame: Any) -> None:
        raise ItemTimeout(f"timed out after {timeout:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_semaphores: IdentityCache[asyncio.Semaphore] = IdentityCache()
_limiters: IdentityCache[RateLimiter] = IdentityCache()


DEFAULT_ASYNC_CONCURRENCY = 64


def _semaphore(stage: Stage) -> asyncio.Semaphore:
    """One semaphore per stage per event loop: a worker's whole concurrency budget."""
    return _semaphores.get(
        (asyncio.get_running_loop(), stage), lambda: asyncio.Semaphore(stage.concurrency or DEFAULT_ASYNC_CONCURRENCY)
    )


def _limiter(stage: Stage, share: float) -> RateLimiter | None:
    """One limiter per stage and share per process, allowed that share of the stage's rate.

    The share is part of the key: a forked worker inherits the driver's cache, where an
    in-process run of the same stage left a limiter allowed the whole rate.
    """
    if stage.rate is None:
        return None
    rate = parse_rate(stage.rate) * share
    return _limiters.get((stage,), lambda: RateLimiter(rate), extra=share)


def _first_param(fn: Callable[..., Any]) -> str | None:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    return (
        params[0].name
        if params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD)
        else None
    )
