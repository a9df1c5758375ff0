"""stages.http against a real aiohttp server on 127.0.0.1 (see conftest.py): no mocks."""
from __future__ import annotations

import asyncio
import pickle
import uuid
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

import pipelines
from pipelines import Pipeline
from pipelines.resources import resources_of
from pipelines.retry import is_transient
from stages import http


def fetch(url: str, **kwargs: object) -> http.Response:
    """One download with its own short-lived session (the REPL way)."""
    async def go() -> http.Response:
        async with http.client_session() as session:
            return await http.download(url, session=session, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(go())


def failure(url: str, **kwargs: object) -> BaseException:
    with pytest.raises(Exception) as info:
        fetch(url, **kwargs)
    return info.value


class TestSuccess:
    def test_body_status_and_content_type(self, server):
        r = fetch(server("ok"))
        assert (r.status, r.content_type, r.body) == (200, "text/plain", b"hello")
        assert r.url == r.final_url == server("ok")

    def test_expected_content_type_and_family(self, server):
        assert fetch(server("json"), expect_content_type="application/json").body == b'{"answer": 42}'
        assert fetch(server("image.png"), expect_content_type="image/*").body.startswith(b"\x89PNG")

    def test_follows_a_few_redirects(self, server):
        r = fetch(server("redirect/3"), max_redirects=3)
        assert r.body == b"arrived"
        assert r.final_url == server("redirect/0")

    def test_declares_its_session_resource_without_wrapping(self):
        assert resources_of(http.download) == {"session": http.client_session}
        assert asyncio.iscoroutinefunction(http.download)


class TestStatusErrors:
    def test_404_names_the_url_and_is_not_retried(self, server):
        exc = failure(server("status/404"))
        assert isinstance(exc, http.HTTPStatusError) and exc.status == 404
        assert server("status/404") in str(exc)
        assert not is_transient(exc)

    @pytest.mark.parametrize("code", [500, 502, 503, 429])
    def test_5xx_and_429_are_transient(self, server, code):
        exc = failure(server(f"status/{code}"))
        assert isinstance(exc, http.HTTPStatusError) and exc.status == code
        assert is_transient(exc)

    def test_429_carries_retry_after_seconds(self, server):
        exc = failure(server(f"busy/{uuid.uuid4().hex}"))
        assert exc.status == 429 and exc.retry_after == 0.0

    def test_503_retry_after_as_http_date(self, server):
        exc = failure(server("unavailable"))
        assert exc.status == 503
        assert 100 < exc.retry_after <= 121

    def test_status_error_survives_pickling(self, server):
        exc = failure(server("status/503"))
        copy = pickle.loads(pickle.dumps(exc))
        assert (copy.status, copy.url, str(copy)) == (exc.status, exc.url, str(exc))


class TestRefusals:
    @pytest.mark.parametrize("url", ["ftp://127.0.0.1/file", "file:///etc/passwd", "/relative/path", "http://"])
    def test_non_http_urls_are_refused_before_any_request(self, url):
        exc = failure(url)
        assert isinstance(exc, ValueError) and repr(url) in str(exc)

    def test_wrong_content_type(self, server):
        exc = failure(server("ok"), expect_content_type="image/*")
        assert isinstance(exc, http.ResponseRejected) and not is_transient(exc)
        assert "text/plain" in str(exc) and server("ok") in str(exc)

    def test_redirect_loop_stops(self, server):
        exc = failure(server("loop"), max_redirects=4)
        assert isinstance(exc, http.ResponseRejected) and "more than 4 redirects" in str(exc)
        assert server("loop") in str(exc)

    def test_redirects_can_be_refused(self, server):
        exc = failure(server("redirect/1"), max_redirects=0)
        assert isinstance(exc, http.ResponseRejected) and "not followed" in str(exc)

    def test_endless_body_is_cut_off_while_streaming(self, server):
        exc = failure(server("huge"), max_bytes=1_000_000, timeout_s=10)
        assert isinstance(exc, http.ResponseRejected) and "1000000" in str(exc)

    def test_declared_size_is_refused_before_reading(self, server):
        exc = failure(server("huge-declared"), max_bytes=1_000_000)
        assert isinstance(exc, http.ResponseRejected) and str(10**9) in str(exc)


class TestTransportErrors:
    def test_slow_answer_times_out_as_transient(self, server):
        exc = failure(server("slow"), timeout_s=0.2)
        assert isinstance(exc, TimeoutError) and server("slow") in str(exc)
        assert is_transient(exc)

    def test_connection_reset(self, server):
        exc = failure(server("reset"))
        assert isinstance(exc, ConnectionError) and server("reset") in str(exc)
        assert is_transient(exc)

    def test_body_cut_mid_way(self, server):
        exc = failure(server("cut"))
        assert isinstance(exc, ConnectionError) and server("cut") in str(exc)

    def test_nothing_listening(self):
        exc = failure("http://127.0.0.1:9/closed")  # the discard port: nothing listens here
        assert isinstance(exc, ConnectionError) and "127.0.0.1:9" in str(exc)


def test_parse_retry_after():
    assert http.parse_retry_after("7") == 7.0
    assert http.parse_retry_after(None) is None
    assert http.parse_retry_after("soon") is None
    assert http.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


# -- in a pipeline: the engine's retries and error policy, one session per worker loop --------

class Urls(BaseModel):
    urls: list[str]


fetching = Pipeline("fetching", params=Urls)


@fetching.source
def urls(params: Urls) -> Iterator[str]:
    yield from params.urls


fetched = fetching.map(http.download, over=urls, name="fetched", kind="io", concurrency=2, retries=3,
                       on_error="collect")


def test_pipeline_retries_transient_errors_and_collects_a_404(server, tmp_path):
    flaky, busy = uuid.uuid4().hex, uuid.uuid4().hex
    wanted = [server(f"flaky/{flaky}/2"), server(f"busy/{busy}"), server("status/404"), server("ok")]
    result = pipelines.run(fetching, {"urls": wanted}, store=tmp_path, executor="asyncio")
    assert result.status == pipelines.RunStatus.PARTIAL
    fetched = result.table("fetched").to_pydict()
    bodies = dict(zip(fetched["url"], fetched["body"], strict=True))
    assert bodies == {wanted[0]: b"ok after 3", wanted[1]: b"served", wanted[3]: b"hello"}
    (lost,) = result.failures
    assert (lost.error_type, lost.attempts) == ("HTTPStatusError", 1)
    assert wanted[2] in lost.message


def test_pipeline_reuses_one_session_per_worker_loop(server, tmp_path):
    server.peers.clear()
    result = pipelines.run(fetching, {"urls": [server("peer")] * 24}, store=tmp_path, executor="asyncio")
    assert result.status == pipelines.RunStatus.OK and len(server.peers) == 24
    assert len(set(server.peers)) <= 4  # concurrency=2: keep-alive connections, not one per item
