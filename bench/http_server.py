"""A loopback HTTP server for the async IO workload, in its own process.

``python -m bench.http_server --latency 0.02 --size 51200`` serves ``/blob/<i>``: it waits
``latency`` seconds, then answers ``size`` bytes. It prints its base URL on one line, then
serves until its standard input closes (the parent exits or closes the pipe).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web


def make_app(latency: float, size: int) -> web.Application:
    payload = os.urandom(size)

    async def blob(request: web.Request) -> web.Response:
        await asyncio.sleep(latency)
        return web.Response(body=payload, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/blob/{i}", blob)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--size", type=int, default=50 * 1024)
    args = parser.parse_args(argv)
    from stages.serve import serve_app

    with serve_app(make_app(args.latency, args.size)) as url:
        print(url, flush=True)
        sys.stdin.read()  # until the parent closes the pipe
    return 0


@contextmanager
def serving(latency: float, size: int) -> Iterator[str]:
    """Start the server in a child process; yield its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.http_server", "--latency", str(latency), "--size", str(size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the bench HTTP server did not start (said {url!r})")
        yield url
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    raise SystemExit(main())
