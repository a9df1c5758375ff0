"""HTTP stages. All IO-bound; one ``aiohttp.ClientSession`` per worker loop, never per item.

``download`` fetches one URL and raises for anything but a usable 2xx answer. The errors
are shaped for the engine's retry policy (``pipelines.define.retry``): an ``HTTPStatusError``
carries ``status`` (5xx, 408 and 429 are retried, other 4xx are not) and ``retry_after``
from the ``Retry-After`` header; timeouts become ``TimeoutError`` and broken connections
``ConnectionError`` (both retried); a response refused on purpose (too big, wrong content
type, too many redirects, a redirect elsewhere, a server asking to wait longer than
``max_retry_after``) is a ``ResponseRejected`` or ``RetryAfterTooLong`` that is never
retried. Every message names the URL.

What a server sends cannot steer the client: redirects are followed one hop at a time and
only within the first URL's origin (scheme, host and port) unless ``allow_redirects_to``
names other origins, never to another scheme such as ``file://``; memory holds only small
bodies, up to a byte budget per worker loop, and larger ones stream to files (see
``stages.spool``), the ``Response`` then naming the file.

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
import io
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import BinaryIO

import aiohttp
from yarl import URL

from pipelines import uses
from pipelines.define.rate import RateLimiter, parse_rate

from . import spool

DEFAULT_MAX_BYTES = 64 * 2**20
DEFAULT_SPOOL_OVER = 2**20
DEFAULT_MEMORY_BUDGET = 64 * 2**20
DEFAULT_MAX_RETRY_AFTER = 120.0
CHUNK_BYTES = 64 * 2**10
USER_AGENT = "pipelines-dag (stages.http)"
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Response:
    """A successful answer: a small body in memory, a large one in a file.

    Attributes:
        url: the URL that was asked for.
        final_url: the URL that answered, after redirects.
        status: the HTTP status (2xx).
        content_type: the media type without parameters, e.g. ``image/png``.
        body: the body, decompressed; empty when it is in ``body_file``.
        body_file: the file holding the body when it was too large for memory, else ``None``.
        size: the body's size in bytes, wherever it is.
    """

    url: str
    final_url: str
    status: int
    content_type: str
    body: bytes
    body_file: str | None = None
    size: int | None = None

    def open(self) -> BinaryIO:
        """The body as a binary file object, read from memory or from ``body_file``."""
        if self.body_file is None:
            return io.BytesIO(self.body)
        try:
            return open(self.body_file, "rb")  # the caller closes it
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.url}: the body's file {self.body_file} is gone") from None

    def read(self) -> bytes:
        """The whole body as bytes (for a body in a file, this reads it into memory)."""
        if self.body_file is None:
            return self.body
        with self.open() as f:
            return f.read()


class HTTPError(Exception):
    """Base class of the errors ``download`` raises on its own; ``url`` names the request."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(url, message)
        self.url = url
        self.message = message

    def __str__(self) -> str:
        return f"{self.url}: {self.message}"


class HTTPStatusError(HTTPError):
    """A 4xx or 5xx answer. The engine retries 5xx, 408 and 429, honouring ``retry_after`` (seconds)."""

    def __init__(
        self,
        url: str,
        status: int,
        reason: str = "",
        retry_after: float | None = None,
        max_retry_after: float | None = None,
    ) -> None:
        detail = f"HTTP {status} {reason}".rstrip()
        if retry_after is not None:
            detail += f" (Retry-After: {retry_after:g} s)"
        super().__init__(url, detail)
        self.args = (url, status, reason, retry_after, max_retry_after)  # pickles and copies faithfully
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.max_retry_after = max_retry_after  # the longest wait the engine may honour for this error


class RetryAfterTooLong(HTTPStatusError):
    """A 429 or 503 whose ``Retry-After`` asks for a longer wait than the stage allows; not retried."""

    retryable = False

    def __init__(self, url: str, status: int, reason: str, retry_after: float, max_retry_after: float) -> None:
        super().__init__(url, status, reason, retry_after, max_retry_after)
        self.message = (
            f"HTTP {status} {reason}".rstrip() + f": the server asks to retry after {retry_after:g} s,"
            f" more than max_retry_after={max_retry_after:g} s; not retried"
        )


class ResponseRejected(HTTPError):
    """An answer refused on purpose: too large, wrong content type, a redirect not followed."""

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
async def download(
    url: str,
    *,
    session: aiohttp.ClientSession,
    timeout_s: float = 30.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    expect_content_type: str | None = None,
    max_redirects: int = 5,
    allow_redirects_to: Iterable[str] | str = (),
    per_host_rate: float | str | None = None,
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
    spool_over: int = DEFAULT_SPOOL_OVER,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    spool_dir: str | os.PathLike[str] | None = None,
) -> Response:
    """Fetch one URL; raise for 4xx/5xx so the stage's error policy decides what happens.

    The body is read in chunks and the download stops as soon as it passes ``max_bytes``,
    so a huge (or endless, or decompressing) body never fills memory. A body larger than
    ``spool_over``, or one that does not fit in what is left of the worker's
    ``memory_budget``, streams to a file in ``spool_dir``; the ``Response`` then names it in
    ``body_file`` (``Response.open()`` and ``Response.read()`` work either way).

    Args:
        url: an ``http://`` or ``https://`` URL.
        session: the worker's session (injected by the engine; see ``client_session``).
        timeout_s: seconds for the whole exchange, redirects and body included.
        max_bytes: the largest body accepted (after decompression).
        expect_content_type: a media type the answer must have, such as ``application/json``,
            or a family such as ``image/*``; ``None`` accepts any.
        max_redirects: redirects followed before giving up; 0 refuses redirects.
        allow_redirects_to: origins, besides the URL's own, that redirects may lead to, such
            as ``"https://cdn.example.org"`` (scheme, host and port; default ports may be
            left out); ``"*"`` allows any http(s) origin. Redirects to other schemes
            (``file://``, ``ftp://``) are always refused.
        per_host_rate: at most this many requests a second to the URL's host, from this
            worker's event loop: a number, or a rate such as ``"5/s"`` or ``"120/min"``.
            ``None`` (the default) sends as fast as the stage's concurrency allows. With
            several worker processes each has its own bucket per host.
        max_retry_after: the longest ``Retry-After`` (seconds) a 429 or 503 may ask for; a
            server asking for more fails the item at once with ``RetryAfterTooLong``, which
            says what the server asked and this limit.
        spool_over: bodies larger than this many bytes go to a file instead of memory.
        memory_budget: bytes that bodies held in memory by this worker's event loop may take
            together, for as long as their ``Response`` objects live; past it, bodies go to
            files whatever their size.
        spool_dir: the folder for those files; default ``$PIPELINES_SPOOL_DIR``, else
            ``pipelines-bodies-UID`` in the temp folder. Files are named by their SHA-256
            and kept after the run; delete the folder when its outputs are no longer needed.

    Returns:
        The ``Response``.

    Raises:
        ValueError: ``url`` is not an absolute http(s) URL, or ``per_host_rate`` is not a
            positive rate.
        HTTPStatusError: a 4xx or 5xx answer (``RetryAfterTooLong`` when it asks for too
            long a wait).
        ResponseRejected: too large, wrong content type, too many redirects, or a redirect
            to another origin or scheme.
        TimeoutError: no complete answer within ``timeout_s``.
        ConnectionError: the connection failed or broke off mid-answer.

    Example:
        >>> async with client_session() as session:                   # doctest: +SKIP
        ...     r = await download(url, session=session, expect_content_type="image/*")
    """
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{url!r}: only absolute http:// and https:// URLs can be downloaded")
    allowed = _origins(allow_redirects_to) | {_origin(parsed)}
    if per_host_rate is not None:
        await host_limiter(parsed.host, per_host_rate).acquire_async()
    body = spool.Body(spool_over=spool_over, budget=spool.loop_budget(memory_budget), folder=spool_dir)
    try:
        async with asyncio.timeout(timeout_s):
            current = parsed
            for hop in range(max_redirects + 1):
                async with session.get(current, allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS and "Location" in resp.headers:
                        current = _next_hop(url, current, resp, hop, max_redirects, allowed)
                        continue
                    _check_status(url, resp, max_retry_after)
                    _check_content_type(url, resp, expect_content_type)
                    if resp.content_length is not None and resp.content_length > max_bytes:
                        raise ResponseRejected(
                            url, f"body of {resp.content_length} bytes exceeds the limit of {max_bytes}"
                        )
                    await body.read(resp.content.iter_chunked(CHUNK_BYTES), max_bytes)
                    data, path = body.finish()
                    response = Response(
                        url=url,
                        final_url=str(resp.url),
                        status=resp.status,
                        content_type=resp.content_type,
                        body=data,
                        body_file=path,
                        size=body.size,
                    )
                    if body.reserved:  # the Response now holds these bytes, until it is collected
                        body.budget.hold_until_collected(response, body.reserved)
                        body.reserved = 0
                    return response
            raise ResponseRejected(url, f"more than {max_redirects} redirects")  # pragma: no cover - loop returns
    except spool.TooLarge:
        raise ResponseRejected(url, f"body exceeds the limit of {max_bytes} bytes") from None
    except TimeoutError:  # asyncio.TimeoutError is TimeoutError since 3.11
        raise TimeoutError(f"{url}: no complete answer within {timeout_s:g} s") from None
    except aiohttp.InvalidURL as exc:
        raise ValueError(f"{url!r}: invalid URL ({exc})") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ConnectionError(f"{url}: {type(exc).__name__}: {exc}") from exc
    finally:
        body.discard()  # on failure: give back its memory, remove a partial file


def _origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


def _origins(spec: Iterable[str] | str) -> set[object]:
    items = [spec] if isinstance(spec, str) else list(spec)
    origins: set[object] = set()
    for item in items:
        if item == "*":
            origins.add("*")
            continue
        parsed = URL(item)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"allow_redirects_to: {item!r} is not an http(s) origin such as 'https://cdn.example.org'")
        origins.add(_origin(parsed))
    return origins


def _next_hop(
    url: str, current: URL, resp: aiohttp.ClientResponse, hop: int, max_redirects: int, allowed: set[object]
) -> URL:
    """The URL a redirect leads to, if this client may follow it; else ``ResponseRejected``."""
    location = resp.headers["Location"]
    if max_redirects == 0:
        raise ResponseRejected(url, f"HTTP {resp.status} redirect to {location!r} not followed (max_redirects=0)")
    if hop == max_redirects:
        raise ResponseRejected(url, f"more than {max_redirects} redirects")
    try:
        target = current.join(URL(location))
    except ValueError as exc:
        raise ResponseRejected(url, f"HTTP {resp.status} redirect to an invalid URL {location!r}: {exc}") from None
    if target.scheme not in ("http", "https") or not target.host:
        raise ResponseRejected(
            url, f"HTTP {resp.status} redirect to {location!r} refused: only http(s) URLs are followed"
        )
    if "*" not in allowed and _origin(target) not in allowed:
        origin = f"{target.scheme}://{target.host}:{target.port}"
        raise ResponseRejected(
            url,
            f"HTTP {resp.status} redirect to another origin ({origin}) refused:"
            f" add it to allow_redirects_to to follow it",
        )
    return target


_host_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, float], RateLimiter]] = (
    weakref.WeakKeyDictionary()
)
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
        The ``pipelines.define.rate.RateLimiter`` to ``await limiter.acquire_async()`` on.

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


def _check_status(url: str, resp: aiohttp.ClientResponse, max_retry_after: float) -> None:
    if resp.status >= 400:
        retry_after = parse_retry_after(resp.headers.get("Retry-After")) if resp.status in (429, 503) else None
        if retry_after is not None and retry_after > max_retry_after:
            raise RetryAfterTooLong(url, resp.status, resp.reason or "", retry_after, max_retry_after)
        raise HTTPStatusError(url, resp.status, resp.reason or "", retry_after, max_retry_after)
    if 300 <= resp.status < 400:  # a 3xx that is not a redirect this client can follow
        raise ResponseRejected(url, f"HTTP {resp.status} with no redirect to follow")


def _check_content_type(url: str, resp: aiohttp.ClientResponse, expected: str | None) -> None:
    if expected is None:
        return
    got = resp.content_type.lower()
    want = expected.lower()
    ok = got.startswith(want[:-1]) if want.endswith("/*") else got == want
    if not ok:
        raise ResponseRejected(url, f"content type {got!r}, expected {expected!r}")


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
