"""A hostile HTTP world, end to end: real runs of the command line against a misbehaving server.

Every case runs ``python -m pipelines run`` in a subprocess against a real aiohttp server on
127.0.0.1 (and a second listener on 127.0.0.2 that must never be reached), and asserts what a
user would check: the error line (stage, item, cause), the exit code and run status, that the
well-behaved items beside the hostile one are kept, how many requests each hostile URL got
(attempts), and that the peak resident memory of the whole process tree stays within a bound
of a baseline run (psutil, sampled in a thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import struct
import subprocess
import sys
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from aiohttp import web

from stages.serve import serve_app

ROOT = Path(__file__).resolve().parents[2]
DAGS = Path(__file__).resolve().parent / "dags_http"
MiB = 2**20
BIG_BODY = 40 * MiB
BIG_BODIES = 16  # 640 MiB in all: held in memory, they would dwarf the bound below
RSS_ALLOWANCE = 200 * MiB  # over the baseline run's peak, for the whole process tree


# -- the hostile server ----------------------------------------------------------------------


@dataclass
class Hostile:
    url: str = ""
    elsewhere: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    elsewhere_hits: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def __call__(self, path: str) -> str:
        return self.url + path.lstrip("/")


def _png_header(width: int, height: int, color_type: int) -> tuple[bytes, Callable[[bytes, bytes], bytes]]:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)), chunk


def pixel_bomb(side: int = 12000) -> bytes:
    """A valid side×side RGB PNG of one colour, compressed row by row (never whole in memory)."""
    head, chunk = _png_header(side, side, 2)
    packer = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * (3 * side)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return head + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def gzip_bomb(size: int = 1024 * MiB) -> bytes:
    """``size`` bytes of zeros, gzip-encoded to about a thousandth of that."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    block = b"\x00" * MiB
    return b"".join(packer.compress(block) for _ in range(size // MiB)) + packer.flush()


def _app(state: Hostile) -> web.Application:
    routes = web.RouteTableDef()
    bomb_png, bomb_gz = pixel_bomb(), gzip_bomb()
    small_png = (ROOT / "data" / "images" / "coffee.png").read_bytes()

    def count(request: web.Request) -> None:
        state.hits[request.path] += 1
        state.paths.append(request.raw_path)

    @routes.get("/ok/{n}")
    async def ok(request: web.Request) -> web.Response:
        count(request)
        return web.Response(text=f"ok {request.match_info['n']}")

    @routes.get("/small.png")
    async def small(request: web.Request) -> web.Response:
        count(request)
        return web.Response(body=small_png, content_type="image/png")

    @routes.get("/slowloris")
    async def slowloris(request: web.Request) -> web.StreamResponse:
        count(request)
        resp = web.StreamResponse(headers={"Content-Length": "100000"})
        await resp.prepare(request)
        while True:  # one byte every half second, forever
            await resp.write(b"x")
            await asyncio.sleep(0.5)

    @routes.get("/endless")
    async def endless(request: web.Request) -> web.StreamResponse:
        count(request)
        resp = web.StreamResponse()
        await resp.prepare(request)
        chunk = b"e" * (256 * 1024)
        while True:
            await resp.write(chunk)

    @routes.get("/gzipbomb")
    async def gzipbomb(request: web.Request) -> web.Response:
        count(request)
        return web.Response(body=bomb_gz, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    @routes.get("/pixelbomb.png")
    async def pixelbomb(request: web.Request) -> web.Response:
        count(request)
        return web.Response(body=bomb_png, content_type="image/png")

    @routes.get("/big/{n}")
    async def big(request: web.Request) -> web.StreamResponse:
        count(request)
        resp = web.StreamResponse(headers={"Content-Length": str(BIG_BODY), "Content-Type": "application/octet-stream"})
        await resp.prepare(request)
        block = bytes([int(request.match_info["n"]) % 256]) * MiB
        for _ in range(BIG_BODY // MiB):
            await resp.write(block)
        return resp

    @routes.get("/to-elsewhere")
    async def to_elsewhere(request: web.Request) -> web.Response:
        count(request)
        raise web.HTTPFound(state.elsewhere + "stolen")

    @routes.get("/to-file")
    async def to_file(request: web.Request) -> web.Response:
        count(request)
        raise web.HTTPFound("file:///etc/passwd")

    @routes.get("/retry-after/{key}/{seconds}")
    async def retry_after(request: web.Request) -> web.Response:
        count(request)
        seconds = request.match_info["seconds"]
        if state.hits[request.path] == 1 or int(seconds) > 120:
            return web.Response(status=429, headers={"Retry-After": seconds})
        return web.Response(text="served after waiting")

    @routes.get("/status/{key}/{code}")
    async def status(request: web.Request) -> web.Response:
        count(request)
        return web.Response(status=int(request.match_info["code"]), text="no")

    @routes.get("/reset/{key}")
    async def reset(request: web.Request) -> web.Response:
        count(request)
        assert request.transport is not None
        request.transport.abort()
        return web.Response(text="never sent")

    @routes.get("/pub/catalog.json")
    async def catalog(request: web.Request) -> web.Response:
        count(request)
        entry = {"title": "t", "category": "c", "license": "l", "source": "s"}
        return web.json_response(
            [
                {**entry, "id": "good", "path": "images/small.png"},
                {**entry, "id": "evil", "path": "%2e%2e/%2e%2e/secret"},
            ]
        )

    @routes.get("/{anything:.*}")
    async def anything(request: web.Request) -> web.Response:
        count(request)
        return web.Response(status=404)

    app = web.Application()
    app.add_routes(routes)
    return app


def _elsewhere_app(state: Hostile) -> web.Application:
    async def record(request: web.Request) -> web.Response:
        state.elsewhere_hits.append(request.raw_path)
        return web.Response(text="you should not be here")

    app = web.Application()
    app.router.add_get("/{anything:.*}", record)
    return app


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    state = Hostile()
    with serve_app(_app(state)) as url, serve_app(_elsewhere_app(state), host="127.0.0.2") as elsewhere:
        state.url, state.elsewhere = url, elsewhere
        yield state


# -- running the command line, measuring its memory --------------------------------------------


@dataclass
class Run:
    returncode: int
    output: str
    peak_rss: int
    store: Path

    def table(self, stage: str) -> dict[str, list]:
        (path,) = self.store.glob(f"runs/*/outputs/{stage}.parquet")
        return pq.read_table(path).to_pydict()

    def failures(self, stage: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines", "inspect", "latest", stage, "--store", str(self.store)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        return proc.stdout + proc.stderr


class PeakRSS(threading.Thread):
    """Samples the resident memory of a process and all its descendants; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                procs = []
            total = 0
            for proc in procs:
                with contextlib.suppress(psutil.Error):  # a worker may exit between the two calls
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            self.stopped.wait(0.02)


def run_cli(store: Path, pipeline: str, *args: str, dags: Path | None = DAGS, **params: object) -> Run:
    command = [sys.executable, "-m", "pipelines", "run", pipeline, "--store", str(store)]
    if dags is not None:
        command += ["--dags", str(dags)]
    for key, value in params.items():
        command += ["--param", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    proc = subprocess.Popen([*command, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = PeakRSS(proc.pid)
    sampler.start()
    output, _ = proc.communicate()
    sampler.stopped.set()
    sampler.join()
    return Run(proc.returncode, output, sampler.peak, store)


@pytest.fixture(scope="module")
def baseline(hostile: Hostile, tmp_path_factory: pytest.TempPathFactory) -> int:
    """The peak memory of the same pipelines on two small, well-behaved URLs."""
    store = tmp_path_factory.mktemp("baseline")
    runs = [
        run_cli(store, name, urls=[hostile("ok/base"), hostile("small.png")])
        for name in ("hostile_fetch", "hostile_pictures")
    ]
    assert all(r.returncode == 0 for r in runs), [r.output for r in runs]
    return max(r.peak_rss for r in runs)


def fetch_with(hostile: Hostile, tmp_path: Path, *bad: str, pipeline: str = "hostile_fetch", **params: object) -> Run:
    """One run over two good URLs around the hostile ones; asserts the good ones are kept."""
    if pipeline == "hostile_pictures":
        good, last = [hostile(f"small.png?{tmp_path.name}-a"), hostile(f"small.png?{tmp_path.name}-b")], "describe"
    else:
        good, last = [hostile(f"ok/{tmp_path.name}-a"), hostile(f"ok/{tmp_path.name}-b")], "fetch"
    urls = [good[0], *[hostile(b) for b in bad], good[1]]
    run = run_cli(tmp_path / "store", pipeline, urls=urls, **params)
    assert "Traceback" not in run.output, run.output
    assert set(good) <= set(run.table(last)["url"]), run.output  # what finished is kept
    return run


def failure_line(run: Run, stage: str = "fetch") -> str:
    match = re.search(rf"^(?:\d+ of )?\d+ items? failed in stage '{stage}' \((.*)$", run.output, re.MULTILINE)
    assert match, run.output
    return match.group(1)


def assert_partial(run: Run) -> None:
    """on_error="collect": the run goes on, ends partial, and exits 0."""
    assert run.returncode == 0 and " · partial · " in run.output, run.output


def assert_bounded(run: Run, baseline: int) -> None:
    grown = run.peak_rss - baseline
    print(f"peak RSS {run.peak_rss / MiB:.0f} MiB, baseline {baseline / MiB:.0f} MiB")  # shown with -s
    assert grown < RSS_ALLOWANCE, f"peak RSS {run.peak_rss / MiB:.0f} MiB, baseline {baseline / MiB:.0f} MiB"


# -- the cases -----------------------------------------------------------------------------


class TestSteering:
    def test_a_redirect_to_another_host_is_refused_and_never_reaches_it(self, hostile, tmp_path, baseline):
        run = fetch_with(hostile, tmp_path, "to-elsewhere")
        assert hostile.elsewhere_hits == []
        line = failure_line(run)
        assert "ResponseRejected" in line and hostile("to-elsewhere") in line and "another origin" in line
        assert "at item 1" in line
        assert hostile.hits["/to-elsewhere"] == 1  # not retried
        assert_partial(run)
        assert_bounded(run, baseline)

    def test_a_redirect_to_a_file_url_is_refused_at_once(self, hostile, tmp_path):
        run = fetch_with(hostile, tmp_path, "to-file")
        line = failure_line(run)
        assert "ResponseRejected" in line and "file:///etc/passwd" in line and "only http(s)" in line
        assert hostile.hits["/to-file"] == 1
        assert "(attempts: 1)" in run.failures("fetch")
        assert_partial(run)

    def test_a_percent_encoded_parent_path_in_the_catalog_is_refused(self, hostile, tmp_path):
        before = len(hostile.paths)
        run = run_cli(tmp_path / "store", "ingest", dags=None, base_url=hostile("pub/"))
        assert run.returncode == 1, run.output
        line = failure_line(run, "parse_catalog")
        assert "%2e%2e/%2e%2e/secret" in line and "must be a relative path" in line
        assert all(p.startswith("/pub/") for p in hostile.paths[before:]), hostile.paths[before:]
        assert "Traceback" not in run.output


class TestMemory:
    def test_large_bodies_go_to_files_and_memory_stays_bounded(self, hostile, tmp_path, baseline, monkeypatch):
        spool = tmp_path / "bodies"
        monkeypatch.setenv("PIPELINES_SPOOL_DIR", str(spool))
        run = fetch_with(hostile, tmp_path, *[f"big/{n}" for n in range(BIG_BODIES)], timeout_s=120.0)
        assert run.returncode == 0 and " · ok · " in run.output, run.output
        assert_bounded(run, baseline)
        fetched = run.table("fetch")
        files = [f for f in fetched["body_file"] if f]
        assert len(files) == BIG_BODIES and all(Path(f).parent == spool for f in files)
        assert sorted(Path(f).stat().st_size for f in files) == [BIG_BODY] * BIG_BODIES
        small = [b for b, f in zip(fetched["body"], fetched["body_file"], strict=True) if not f]
        assert sorted(small) == sorted(f"ok {tmp_path.name}-{x}".encode() for x in "ab")  # kept in memory

    def test_an_endless_body_is_cut_at_max_bytes(self, hostile, tmp_path, baseline):
        run = fetch_with(hostile, tmp_path, "endless", max_bytes=64 * MiB)
        line = failure_line(run)
        assert "ResponseRejected" in line and "exceeds the limit of 67108864 bytes" in line
        assert hostile.hits["/endless"] == 1
        assert_partial(run)
        assert_bounded(run, baseline)

    def test_a_gzip_bomb_is_cut_at_max_bytes_decompressed(self, hostile, tmp_path, baseline):
        run = fetch_with(hostile, tmp_path, "gzipbomb", max_bytes=64 * MiB)
        line = failure_line(run)
        assert "ResponseRejected" in line and hostile("gzipbomb") in line
        assert hostile.hits["/gzipbomb"] == 1
        assert_partial(run)
        assert_bounded(run, baseline)

    def test_a_pixel_bomb_fails_its_item_before_decoding(self, hostile, tmp_path, baseline):
        run = fetch_with(hostile, tmp_path, "pixelbomb.png", pipeline="hostile_pictures")
        assert "ValueError" in failure_line(run, "describe")
        failures = run.failures("describe")
        assert hostile("pixelbomb.png") in failures and "(attempts: 1)" in failures
        assert "12000×12000 = 144,000,000 pixels, more than max_pixels=89,478,485" in failures
        assert "DecompressionBombWarning" not in run.output
        assert len(run.table("describe")["sha256"]) == 2  # both small images are described
        assert_partial(run)
        assert_bounded(run, baseline)


class TestRetries:
    def test_slow_loris_times_out_and_is_retried(self, hostile, tmp_path, baseline):
        run = fetch_with(hostile, tmp_path, "slowloris", timeout_s=1.0)
        line = failure_line(run)
        assert "TimeoutError" in line and hostile("slowloris") in line and "within 1 s" in line
        assert hostile.hits["/slowloris"] == 4  # retries=3: transient
        assert_partial(run)
        assert_bounded(run, baseline)

    def test_a_long_retry_after_fails_at_once_saying_what_was_asked(self, hostile, tmp_path):
        path = f"retry-after/{tmp_path.name}/3600"
        run = fetch_with(hostile, tmp_path, path)
        line = failure_line(run)
        assert "RetryAfterTooLong" in line and hostile(path) in line
        failures = run.failures("fetch")
        assert "retry after 3600 s, more than max_retry_after=120 s; not retried (attempts: 1)" in failures
        assert hostile.hits["/" + path] == 1
        assert_partial(run)

    def test_a_short_retry_after_is_waited_out(self, hostile, tmp_path):
        path = f"retry-after/{tmp_path.name}/1"
        run = fetch_with(hostile, tmp_path, path)
        assert run.returncode == 0 and " · ok · " in run.output, run.output
        assert hostile.hits["/" + path] == 2
        assert hostile(path) in run.table("fetch")["url"]

    def test_500_forever_is_retried_then_reported_without_tracebacks(self, hostile, tmp_path):
        path = f"status/{tmp_path.name}/500"
        run = fetch_with(hostile, tmp_path, path)
        line = failure_line(run)
        assert "HTTPStatusError" in line and "HTTP 500" in line and hostile(path) in line
        assert hostile.hits["/" + path] == 4
        assert "(attempts: 4)" in run.failures("fetch")
        assert len(run.output) < 8000  # a summary, not pages of tracebacks
        assert_partial(run)

    @pytest.mark.parametrize(("code", "attempts"), [(403, 1), (404, 1), (410, 1), (408, 4)])
    def test_4xx_fail_at_once_except_408(self, hostile, tmp_path, code, attempts):
        path = f"status/{tmp_path.name}/{code}"
        run = fetch_with(hostile, tmp_path, path)
        assert f"HTTP {code}" in failure_line(run)
        assert hostile.hits["/" + path] == attempts
        assert_partial(run)

    def test_connection_resets_are_retried_then_reported(self, hostile, tmp_path):
        path = f"reset/{tmp_path.name}"
        run = fetch_with(hostile, tmp_path, path)
        line = failure_line(run)
        assert "ConnectionError" in line and hostile(path) in line
        assert "(attempts: 4)" in run.failures("fetch")
        assert hostile.hits["/" + path] >= 4  # aiohttp itself may try a reset keep-alive connection twice
        assert_partial(run)


def test_ingests_own_server_answers_414_to_an_overlong_path_and_it_is_not_retried(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    image = (ROOT / "data" / "images" / "coffee.png").read_bytes()
    (data / "images" / "coffee.png").write_bytes(image)
    entry = {"title": "t", "category": "c", "license": "l", "source": "s"}
    long_path = "images/" + "a" * 5000 + ".png"
    name_too_long = "images/" + "b" * 300 + ".png"
    (data / "catalog.json").write_text(
        json.dumps(
            [
                {**entry, "id": "coffee", "path": "images/coffee.png"},
                {**entry, "id": "long", "path": long_path},
                {**entry, "id": "name", "path": name_too_long},
            ]
        )
    )
    run = run_cli(tmp_path / "store", "ingest", dags=None, data_dir=str(data))
    assert run.returncode == 0 and " · partial · " in run.output, run.output
    assert "Traceback" not in run.output and "Error handling request" not in run.output
    assert len(run.output) < 8000
    failures = run.failures("download")
    assert "HTTP 414" in failures and "HTTP 404" in failures
    assert failures.count("(attempts: 1)") == 2
    assert run.table("report") == {"category": ["c"], "listed": [3], "described": [1], "missing": [2]}


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("images/a.png", True),
        ("images/./a.png", True),
        ("images/a%20b.png", True),
        ("%2e%2e/%2e%2e/x", False),
        ("images/%2E%2E/%2e%2e/x", False),
        ("%252e%252e/x", False),
        ("..%2fx", False),
        ("..%5cx", False),
        ("a/../../x", False),
        ("/etc/passwd", False),
        ("%2fetc/passwd", False),
        ("http://elsewhere/x", False),
        ("//elsewhere/x", False),
    ],
)
def test_ingest_checks_catalog_paths_after_decoding_and_normalising(path, ok):
    from pydantic import ValidationError

    Entry = _ingest_module().Entry
    fields = {"id": "i", "title": "t", "category": "c", "license": "l", "source": "s"}
    if ok:
        assert Entry(**fields, path=path).path == path
    else:
        with pytest.raises(ValidationError, match="must be a relative path below the base URL"):
            Entry(**fields, path=path)


def _ingest_module():
    """dags/ingest.py, imported from its file: the name ``dags`` may belong to a test folder."""
    import importlib.util

    name = "hostile_ingest_under_test"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "dags" / "ingest.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
