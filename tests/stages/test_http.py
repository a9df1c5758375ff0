"""stages.http against a real aiohttp server on 127.0.0.1 (see conftest.py): no mocks."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import pickle
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

import pipelines
from pipelines import Pipeline
from pipelines.define import retry
from pipelines.define.resources import resources_of
from pipelines.define.retry import is_transient
from stages import http, serve


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


fetched = fetching.map(
    http.download, over=urls, name="fetched", kind="io", concurrency=2, retries=3, on_error="collect"
)


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


def redirect_to(server, target: str) -> str:
    return server("redirect-to") + "?" + urllib.parse.urlencode({"url": target})


class TestRedirectsStayHome:
    def test_a_redirect_to_another_origin_is_refused_before_any_request(self, server, elsewhere):
        exc = failure(redirect_to(server, elsewhere("secret")))
        assert isinstance(exc, http.ResponseRejected) and not is_transient(exc)
        assert "another origin (http://127.0.0.2:" in str(exc) and "allow_redirects_to" in str(exc)
        assert elsewhere.hits["/secret"] == 0

    def test_another_port_of_the_same_host_is_another_origin(self, server):
        exc = failure(redirect_to(server, "http://127.0.0.1:9/x"))
        assert isinstance(exc, http.ResponseRejected) and "another origin (http://127.0.0.1:9)" in str(exc)

    @pytest.mark.parametrize("allow", ["named", "*"])
    def test_allow_redirects_to_follows_a_named_origin(self, server, elsewhere, allow):
        path = f"allowed-{uuid.uuid4().hex}"
        origin = elsewhere.url.rstrip("/") if allow == "named" else "*"
        r = fetch(redirect_to(server, elsewhere(path)), allow_redirects_to=[origin])
        assert (r.body, r.final_url, elsewhere.hits["/" + path]) == (b"elsewhere", elsewhere(path), 1)

    @pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x", "data:text/plain,hi"])
    def test_a_redirect_to_another_scheme_is_refused_and_not_retried(self, server, target):
        exc = failure(redirect_to(server, target), allow_redirects_to="*")
        assert isinstance(exc, http.ResponseRejected) and not is_transient(exc)
        assert "only http(s) URLs are followed" in str(exc) and target in str(exc)

    def test_same_origin_redirects_are_still_followed(self, server):
        assert fetch(redirect_to(server, "/ok")).body == b"hello"

    def test_an_allowed_origin_must_be_an_http_origin(self, server):
        with pytest.raises(ValueError, match="allow_redirects_to: 'file:///tmp' is not an http"):
            fetch(server("ok"), allow_redirects_to=["file:///tmp"])


class TestBodiesInFiles:
    def test_a_body_over_spool_over_goes_to_a_file(self, server, tmp_path):
        r = fetch(server("sized/5000"), spool_over=1000, spool_dir=tmp_path)
        expected = bytes(i % 251 for i in range(5000))
        assert (r.body, r.size) == (b"", 5000)
        assert r.body_file == str(tmp_path / f"{hashlib.sha256(expected).hexdigest()}.body")
        assert r.read() == expected and r.open().read(10) == expected[:10]
        assert fetch(server("sized/500"), spool_over=1000, spool_dir=tmp_path).body == expected[:500]

    def test_the_worker_memory_budget_sends_bodies_to_files_while_others_live(self, server, tmp_path):
        async def go() -> list[str | None]:
            kept, where = [], []
            async with http.client_session() as session:
                for _ in range(3):  # 1500 + 1500 fit in 3000; the third does not
                    kept.append(
                        await http.download(
                            server("sized/1500"),
                            session=session,
                            spool_over=2000,
                            memory_budget=3000,
                            spool_dir=tmp_path,
                        )
                    )
                where = [r.body_file for r in kept]
                kept.clear()
                gc.collect()  # the bodies are gone: their bytes are back in the budget
                again = await http.download(
                    server("sized/1500"), session=session, spool_over=2000, memory_budget=3000, spool_dir=tmp_path
                )
                return [*where, again.body_file]

        first, second, third, after = asyncio.run(go())
        assert (first, second, after) == (None, None, None) and third is not None

    def test_a_refused_body_leaves_no_file_behind(self, server, tmp_path):
        exc = failure(server("huge"), max_bytes=1_000_000, spool_over=1000, spool_dir=tmp_path, timeout_s=10)
        assert isinstance(exc, http.ResponseRejected)
        assert list(tmp_path.iterdir()) == []

    def test_a_gone_file_is_named_in_the_error(self, server, tmp_path):
        r = fetch(server("sized/5000"), spool_over=1000, spool_dir=tmp_path)
        Path(r.body_file).unlink()
        with pytest.raises(FileNotFoundError, match=r"the body's file .* is gone"):
            r.read()


class TestRetryAfterLimit:
    def test_a_longer_wait_than_max_retry_after_fails_at_once(self, server):
        exc = failure(server("retry-after/3600"))
        assert isinstance(exc, http.RetryAfterTooLong) and exc.status == 429 and not is_transient(exc)
        assert "asks to retry after 3600 s, more than max_retry_after=120 s" in str(exc)
        copy = pickle.loads(pickle.dumps(exc))
        assert (type(copy), str(copy)) == (type(exc), str(exc))

    def test_a_stage_may_allow_longer_or_shorter_waits(self, server):
        exc = failure(server("retry-after/3600"), max_retry_after=7200)
        assert type(exc) is http.HTTPStatusError and is_transient(exc) and retry.delay(0, exc) == 3600
        assert isinstance(failure(server("retry-after/30"), max_retry_after=10), http.RetryAfterTooLong)

    def test_408_is_transient_and_other_4xx_are_not(self):
        assert is_transient(http.HTTPStatusError("u", 408))
        assert not any(is_transient(http.HTTPStatusError("u", c)) for c in (400, 401, 403, 404, 410, 414, 451))


class TestServeRefusesUnservablePaths:
    def test_overlong_paths_get_414_and_unnameable_files_404(self, tmp_path):
        (tmp_path / "a.txt").write_text("a")
        with serve.serve_directory(tmp_path) as base:
            assert fetch(base + "a.txt").body == b"a"
            too_long = failure(base + "x" * 5000)
            name_too_long = failure(base + "y" * 300)
        assert isinstance(too_long, http.HTTPStatusError) and too_long.status == 414 and not is_transient(too_long)
        assert isinstance(name_too_long, http.HTTPStatusError) and name_too_long.status == 404
