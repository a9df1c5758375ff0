"""Fixtures for the stages tests: a real aiohttp server on 127.0.0.1 that misbehaves on purpose.

Routes (``{key}`` keeps per-test state apart on the shared server):
    /ok, /json, /image.png     well-behaved answers
    /status/{code}             that status, empty body
    /flaky/{key}/{n}           500 for the first ``n`` requests of ``key``, then 200
    /busy/{key}                429 with ``Retry-After: 0`` on the first request of ``key``, then 200
    /unavailable               503 with an HTTP-date ``Retry-After``
    /slow                      answers after 2 s
    /huge, /huge-declared      an endless chunked body; a body announced as 1 GB
    /loop, /redirect/{n}       a redirect loop; ``n`` redirects then 200
    /reset, /cut               the connection closed before any answer; mid-body
    /peer                      200, and records the client's port (connection reuse)
    /redirect-to?url=U         302 to any URL U (another origin, file://)
    /sized/{n}                 a body of ``n`` bytes
    /retry-after/{s}           429 with ``Retry-After: s``

``elsewhere`` is a second server, on 127.0.0.2: another origin, which records every request.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from stages.serve import serve_app

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"


@dataclass
class Server:
    """The running test server: its base URL and what it has seen."""

    url: str
    hits: Counter[str] = field(default_factory=Counter)
    peers: list[int] = field(default_factory=list)

    def __call__(self, path: str) -> str:
        return self.url + path.lstrip("/")


def _app(server: Server) -> web.Application:
    routes = web.RouteTableDef()
    png = (DATA / "images" / "horse.png").read_bytes()

    @routes.get("/ok")
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    @routes.get("/json")
    async def json_(request: web.Request) -> web.Response:
        return web.json_response({"answer": 42})

    @routes.get("/image.png")
    async def image(request: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    @routes.get("/status/{code}")
    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    @routes.get("/flaky/{key}/{n}")
    async def flaky(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        server.hits[key] += 1
        if server.hits[key] <= int(request.match_info["n"]):
            return web.Response(status=500, text="try again")
        return web.Response(text=f"ok after {server.hits[key]}")

    @routes.get("/busy/{key}")
    async def busy(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        server.hits[key] += 1
        if server.hits[key] == 1:
            return web.Response(status=429, headers={"Retry-After": "0"})
        return web.Response(text="served")

    @routes.get("/unavailable")
    async def unavailable(request: web.Request) -> web.Response:
        when = email.utils.formatdate(time.time() + 120, usegmt=True)
        return web.Response(status=503, headers={"Retry-After": when})

    @routes.get("/slow")
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    @routes.get("/huge")
    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        chunk = b"x" * 65536
        for _ in range(16384):  # 1 GiB if nobody stops reading
            await resp.write(chunk)
        return resp

    @routes.get("/huge-declared")
    async def huge_declared(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(10**9)})
        await resp.prepare(request)
        await resp.write(b"x" * 1024)
        return resp

    @routes.get("/loop")
    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    @routes.get("/redirect/{n}")
    async def redirect(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(text="arrived")
        raise web.HTTPFound(f"/redirect/{n - 1}")

    @routes.get("/reset")
    async def reset(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.abort()
        return web.Response(text="never sent")

    @routes.get("/cut")
    async def cut(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "100000"})
        await resp.prepare(request)
        await resp.write(b"y" * 1000)
        assert request.transport is not None
        request.transport.abort()
        return resp

    @routes.get("/redirect-to")
    async def redirect_to(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["url"])

    @routes.get("/sized/{n}")
    async def sized(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.Response(body=bytes(i % 251 for i in range(n)), content_type="application/octet-stream")

    @routes.get("/retry-after/{seconds}")
    async def retry_after(request: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": request.match_info["seconds"]})

    @routes.get("/peer")
    async def peer(request: web.Request) -> web.Response:
        assert request.transport is not None
        server.peers.append(request.transport.get_extra_info("peername")[1])
        return web.Response(text="seen")

    app = web.Application()
    app.add_routes(routes)
    return app


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """The misbehaving server, shared by the session (routes keep per-key state)."""
    state = Server(url="")
    with serve_app(_app(state)) as url:
        state.url = url
        yield state


@pytest.fixture(scope="session")
def elsewhere() -> Iterator[Server]:
    """Another origin (127.0.0.2): answers 200 to anything and records the paths it was asked for."""
    state = Server(url="")

    async def record(request: web.Request) -> web.Response:
        state.hits[request.path] += 1
        return web.Response(text="elsewhere")

    app = web.Application()
    app.router.add_get("/{anything:.*}", record)
    with serve_app(app, host="127.0.0.2") as url:
        state.url = url
        yield state
