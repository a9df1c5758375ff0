"""Which failures to retry, and how long to wait between attempts.

By default only transient failures retry: timeouts, connection errors, HTTP 5xx and 429
(honouring ``Retry-After``), and exceptions that say ``retryable = True``. A 404 or a bug
such as ``TypeError`` fails at once: retrying it only wastes time. A stage can pass its own
``retry_on`` predicate.
"""
from __future__ import annotations

import random
from collections.abc import Callable

BASE_DELAY = 0.1
MAX_DELAY = 30.0


def is_transient(exc: BaseException) -> bool:
    """True for failures that may go away on their own."""
    flag = getattr(exc, "retryable", None)
    if flag is not None:
        return bool(flag)
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status == 429 or status >= 500
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    module = type(exc).__module__ or ""
    if module.startswith("aiohttp"):
        name = type(exc).__name__
        return "Connection" in name or "Timeout" in name or name in ("ServerDisconnectedError", "ClientPayloadError")
    return False


def should_retry(exc: BaseException, predicate: Callable[[BaseException], bool] | None) -> bool:
    return (predicate or is_transient)(exc)


def delay(attempt: int, exc: BaseException | None = None, *, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Seconds to wait before attempt ``attempt + 1``: full-jitter exponential backoff.

    A ``retry_after`` attribute on the exception (from an HTTP ``Retry-After``) wins.
    """
    after = getattr(exc, "retry_after", None)
    if isinstance(after, (int, float)) and after >= 0:
        return min(float(after), cap)
    return random.uniform(0, min(cap, base * (2 ** attempt)))
