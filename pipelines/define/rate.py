"""Rate limits such as ``rate="50/s"``: a token bucket per stage per worker."""

from __future__ import annotations

import asyncio
import re
import threading
import time

_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$")


def parse_rate(text: str) -> float:
    """Items per second from ``"50/s"``, ``"600/min"``, ``"2/5s"``. Raises ``ValueError``."""
    match = _RATE.match(str(text).lower())
    if not match or match.group(3) not in _UNITS:
        raise ValueError(f"rate {text!r} is not like '50/s', '600/min' or '1000/h'")
    count, span, unit = float(match.group(1)), float(match.group(2) or 1), _UNITS[match.group(3)]
    if count <= 0:
        raise ValueError(f"rate {text!r} must be positive")
    return count / (span * unit)


class RateLimiter:
    """A token bucket: at most ``per_second`` acquisitions a second, bursts of ``burst``."""

    def __init__(self, per_second: float, burst: float = 1.0) -> None:
        self.per_second = per_second
        self.burst = max(burst, 1.0)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Take a token; return how long to wait before using it."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.per_second)
            self._stamp = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.per_second

    def acquire(self) -> None:
        delay = self._reserve()
        if delay > 0:
            time.sleep(delay)

    async def acquire_async(self) -> None:
        delay = self._reserve()
        if delay > 0:
            await asyncio.sleep(delay)
