"""HTTP stages. All IO-bound; one ``aiohttp.ClientSession`` per worker loop, never per item.

``download`` fetches one URL and raises for anything but a usable 2xx answer. The errors
are shaped for the engine's retry policy (``pipelines.retry``): an ``HTTPStatusError``
carries ``status`` (5xx and 429 are retried, 404 is not) and ``retry_after`` from the
``Retry-After`` header; timeouts become ``TimeoutError`` and broken connections
``ConnectionError`` (both retried); a response refused on purpose (too big, wrong content
type, too many redirects) is a ``ResponseRejected`` that is never retried. Every message
names the URL.

To be a polite client, ``per_host_rate`` caps the requests ``download`` sends to each host
(a token bucket per host per worker event loop, so retries count too); a stage's own
``rate=`` caps the whole stage instead, whatever the hosts.

Example:
    >>> import asyncio
    >>> async def main():
    ...     async with client_session() as session:
    ...         return await download("http://127.0.0.1:8000/catalog.json", session=session)
    >>> asyncio.run(main()).status                        # doctest: +SKIP
    200
"""
from __future__ import annotations

import asyncio
import email.utils
import threading
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from yarl import URL

from pipelines import uses
from pipelines.rate import RateLimiter, parse_rate

DEFAULT_MAX_BYTES = 64 * 2**20
CHUNK_BYTES = 64 * 2**10
USER_AGENT = "pipelines-dag (stages.http)"


@dataclass(frozen=True, slots=True)
class Response:
    """A successful answer, body read in full.

    Attributes:
        url: the URL that was asked for.
        final_url: the URL that answered, after redirects.
        status: the HTTP status (2xx).
        content_type: the media type without parameters, e.g. ``image/png``.
        body: the body, decompressed.
    """

    url: str
    final_url: str
    status: int
    content_type: str
    body: bytes


class HTTPError(Exception):
    """Base class of the errors ``download`` raises on its own; ``url`` names the request."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(url, message)
        self.url = url
        self.message = message

    def __str__(self) -> str:
        return f"{self.url}: {self.message}"


class HTTPStatusError(HTTPError):
    """A 4xx or 5xx answer. The engine retries 5xx and 429, honouring ``retry_after`` (seconds)."""

    def __init__(self, url: str, status: int, reason: str = "", retry_after: float | None = None) -> None:
        detail = f"HTTP {status} {reason}".rstrip()
        if retry_after is not None:
            detail += f" (Retry-After: {retry_after:g} s)"
        super().__init__(url, detail)
        self.args = (url, status, reason, retry_after)  # pickles and copies faithfully
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class ResponseRejected(HTTPError):
    """An answer refused on purpose: too large, wrong content type, too many redirects."""

    retryable = False


@asynccontextmanager
async def client_session(*, limit: int = 100) -> AsyncIterator[aiohttp.ClientSession]:
    """Open the per-worker resource ``download`` needs: one session, at most ``limit`` connections.

    Args:
        limit: the connection pool's size (connections open at once, over all hosts).

    Yields:
        An ``aiohttp.ClientSession``, closed when the worker shuts down.

    Example:
        >>> async with client_session(limit=10) as session:     # doctest: +SKIP
        ...     await download(url, session=session)
    """
    connector = aiohttp.TCPConnector(limit=limit)
    async with aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT}) as session:
        yield session


@uses(session=client_session)
async def download(url: str, *, session: aiohttp.ClientSession, timeout_s: float = 30.0,
                   max_bytes: int = DEFAULT_MAX_BYTES, expect_content_type: str | None = None,
                   max_redirects: int = 5, per_host_rate: float | str | None = None) -> Response:
    """Fetch one URL; raise for 4xx/5xx so the stage's error policy decides what happens.

    The body is read in chunks and the download stops as soon as it passes ``max_bytes``,
    so a huge (or endless) body never fills memory.

    Args:
        url: an ``http://`` or ``https://`` URL.
        session: the worker's session (injected by the engine; see ``client_session``).
        timeout_s: seconds for the whole exchange, body included.
        max_bytes: the largest body accepted.
        expect_content_type: a media type the answer must have, such as ``application/json``,
            or a family such as ``image/*``; ``None`` accepts any.
        max_redirects: redirects followed before giving up; 0 refuses redirects.
        per_host_rate: at most this many requests a second to the URL's host, from this
            worker's event loop: a number, or a rate such as ``"5/s"`` or ``"120/min"``.
            ``None`` (the default) sends as fast as the stage's concurrency allows. With
            several worker processes each has its own bucket per host.

    Returns:
        The ``Response``, body included.

    Raises:
        ValueError: ``url`` is not an absolute http(s) URL, or ``per_host_rate`` is not a
            positive rate.
        HTTPStatusError: a 4xx or 5xx answer.
        ResponseRejected: too large, wrong content type, or too many redirects.
        TimeoutError: no complete answer within ``timeout_s``.
        ConnectionError: the connection failed or broke off mid-answer.

    Example:
        >>> async with client_session() as session:                   # doctest: +SKIP
        ...     r = await download(url, session=session, expect_content_type="image/*")
    """
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{url!r}: only absolute http:// and https:// URLs can be downloaded")
    if per_host_rate is not None:
        await host_limiter(parsed.host, per_host_rate).acquire_async()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        # aiohttp gives up on its max_redirects-th redirect; we allow max_redirects of them
        async with session.get(url, timeout=timeout, allow_redirects=max_redirects > 0,
                               max_redirects=max_redirects + 1) as resp:
            _check_status(url, resp)
            _check_content_type(url, resp, expect_content_type)
            body = await _read_capped(url, resp, max_bytes)
            return Response(url=url, final_url=str(resp.url), status=resp.status,
                            content_type=resp.content_type, body=body)
    except aiohttp.TooManyRedirects:
        raise ResponseRejected(url, f"more than {max_redirects} redirects") from None
    except TimeoutError:  # asyncio.TimeoutError is TimeoutError since 3.11
        raise TimeoutError(f"{url}: no complete answer within {timeout_s:g} s") from None
    except aiohttp.InvalidURL as exc:
        raise ValueError(f"{url!r}: invalid URL ({exc})") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ConnectionError(f"{url}: {type(exc).__name__}: {exc}") from exc


_host_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, float], RateLimiter]] = (
    weakref.WeakKeyDictionary())
_host_limiters_lock = threading.Lock()


def host_limiter(host: str, rate: float | str) -> RateLimiter:
    """The token bucket for ``host`` on the running event loop (made on first use).

    One bucket per (host, rate) per worker loop: every ``download`` to that host from this
    loop waits its turn, whichever task or stage it comes from. Host names are compared
    case-insensitively; ``127.0.0.1`` and ``localhost`` are different hosts.

    Args:
        host: the host name or address, as in the URL.
        rate: requests per second, or a rate such as ``"5/s"``.

    Returns:
        The ``pipelines.rate.RateLimiter`` to ``await limiter.acquire_async()`` on.

    Raises:
        ValueError: ``rate`` is not positive or cannot be read.
        RuntimeError: no event loop is running.

    Example:
        >>> async def same():                                  # doctest: +SKIP
        ...     return host_limiter("example.org", 5) is host_limiter("EXAMPLE.org", "5/s")
    """
    per_second = parse_rate(rate) if isinstance(rate, str) else float(rate)
    if not per_second > 0:
        raise ValueError(f"per_host_rate must be a positive rate, not {rate!r}")
    loop = asyncio.get_running_loop()
    key = (host.lower(), per_second)
    with _host_limiters_lock:
        buckets = _host_limiters.get(loop)
        if buckets is None:
            buckets = _host_limiters[loop] = {}
        limiter = buckets.get(key)
        if limiter is None:
            limiter = buckets[key] = RateLimiter(per_second)
    return limiter


def _check_status(url: str, resp: aiohttp.ClientResponse) -> None:
    if resp.status >= 400:
        retry_after = parse_retry_after(resp.headers.get("Retry-After")) if resp.status in (429, 503) else None
        raise HTTPStatusError(url, resp.status, resp.reason or "", retry_after)
    if 300 <= resp.status < 400:  # only when redirects are refused (max_redirects=0)
        raise ResponseRejected(url, f"HTTP {resp.status} redirect to {resp.headers.get('Location')!r} not followed")


def _check_content_type(url: str, resp: aiohttp.ClientResponse, expected: str | None) -> None:
    if expected is None:
        return
    got = resp.content_type.lower()
    want = expected.lower()
    ok = got.startswith(want[:-1]) if want.endswith("/*") else got == want
    if not ok:
        raise ResponseRejected(url, f"content type {got!r}, expected {expected!r}")


async def _read_capped(url: str, resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise ResponseRejected(url, f"body of {resp.content_length} bytes exceeds the limit of {max_bytes}")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
        body += chunk
        if len(body) > max_bytes:
            raise ResponseRejected(url, f"body exceeds the limit of {max_bytes} bytes")
    return bytes(body)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    Args:
        value: the header's value, or ``None``.

    Returns:
        Seconds (never negative), or ``None`` when absent or unreadable.

    Example:
        >>> parse_retry_after("3")
        3.0
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
