"""Which failures to retry, and how long to wait between attempts.

By default only transient failures retry: timeouts, connection errors, HTTP 5xx, 408 and
429 (honouring ``Retry-After``), and exceptions that say ``retryable = True``. A failure
that cannot pass on its own fails at once: a 404 or any other 4xx, an exception that says
``retryable = False`` (a refused redirect, a body over its limit), a bug such as
``TypeError``, or a server asking to wait longer than the error's ``max_retry_after``
attribute allows (``MAX_RETRY_AFTER`` when it has none; ``stages.http.download`` sets it from
its ``max_retry_after=`` option). A stage can pass its own ``retry_on`` predicate.
"""

from __future__ import annotations

import random
from collections.abc import Callable

BASE_DELAY = 0.1
MAX_DELAY = 30.0
MAX_RETRY_AFTER = 120.0
RETRIED_4XX = (408, 429)  # Request Timeout, Too Many Requests: the same request may pass later


def is_transient(exc: BaseException) -> bool:
    """True for failures that may go away on their own."""
    flag = getattr(exc, "retryable", None)
    if flag is not None:
        return bool(flag)
    after = getattr(exc, "retry_after", None)
    if isinstance(after, (int, float)) and after > retry_after_limit(exc):
        return False
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status in RETRIED_4XX or status >= 500
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    module = type(exc).__module__ or ""
    if module.startswith("aiohttp"):
        name = type(exc).__name__
        return "Connection" in name or "Timeout" in name or name in ("ServerDisconnectedError", "ClientPayloadError")
    return False


def retry_after_limit(exc: BaseException | None) -> float:
    """The longest ``Retry-After`` wait honoured for ``exc``: its ``max_retry_after``, or the default."""
    limit = getattr(exc, "max_retry_after", None)
    return float(limit) if isinstance(limit, (int, float)) and limit >= 0 else MAX_RETRY_AFTER


def should_retry(exc: BaseException, predicate: Callable[[BaseException], bool] | None) -> bool:
    return (predicate or is_transient)(exc)


def delay(attempt: int, exc: BaseException | None = None, *, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Seconds to wait before attempt ``attempt + 1``: full-jitter exponential backoff.

    A ``retry_after`` attribute on the exception (from an HTTP ``Retry-After``) wins, up to
    ``retry_after_limit(exc)``: waiting less than the server asked only earns another refusal.
    """
    after = getattr(exc, "retry_after", None)
    if isinstance(after, (int, float)) and after >= 0:
        return min(float(after), retry_after_limit(exc))
    return random.uniform(0, min(cap, base * (2**attempt)))
