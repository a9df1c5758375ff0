"""Item-level reuse: items computed before under the same stage fingerprint are not computed again,
even when the batch around them changed (a catalog that gained entries, an inserted item)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from aiohttp import web
from pydantic import BaseModel

from pipelines import Pipeline
from pipelines._engine.idset import IdSet
from pipelines.define import loader
from pipelines.store import Store
from stages.serve import serve_app

from .conftest import ROOT

IMAGES = sorted((ROOT / "data" / "images").glob("*.png"))


# -- ingest against a server that counts requests ----------------------------------------------


class CountingServer:
    """A catalog (changeable between runs) and images, each request counted by path."""

    def __init__(self) -> None:
        self.catalog: list[dict] = []
        self.requests: Counter[str] = Counter()
        app = web.Application()
        app.router.add_get("/catalog.json", self._catalog)
        app.router.add_get("/img/{name}", self._image)
        self.app = app

    async def _catalog(self, request: web.Request) -> web.Response:
        self.requests[request.path] += 1
        return web.Response(body=json.dumps(self.catalog).encode(), content_type="application/json")

    async def _image(self, request: web.Request) -> web.Response:
        self.requests[request.path] += 1
        number = int(request.match_info["name"].split("-")[0])
        return web.Response(body=IMAGES[number % len(IMAGES)].read_bytes(), content_type="image/png")

    def images(self) -> Counter[str]:
        found = Counter({p: n for p, n in self.requests.items() if p.startswith("/img/")})
        self.requests.clear()
        return found


def entry(n: int, image: int | None = None) -> dict:
    return {
        "id": f"e{n}",
        "title": f"entry {n}",
        "category": ("people", "animals", "things")[n % 3],
        "path": f"img/{n if image is None else image}-{n}.png",
        "license": "CC0",
        "source": "test",
    }


@pytest.fixture
def counting() -> Iterator[tuple[CountingServer, str]]:
    server = CountingServer()
    with serve_app(server.app) as url:
        yield server, url


@pytest.mark.slow
def test_a_catalog_that_gained_10_entries_downloads_exactly_10_images(counting, tmp_path: Path) -> None:
    server, url = counting
    ingest = loader.load("ingest", ROOT / "dags")
    params = {"base_url": url}
    store = tmp_path / "store"
    server.catalog = [entry(n) for n in range(20)]
    first = ingest.run(params, store=store)
    assert first.ok and len(server.images()) == 20

    inserted = [entry(n) for n in range(100, 110)]  # 4 in the middle, 6 at the end
    server.catalog = [
        *server.catalog[:3],
        inserted[0],
        *server.catalog[3:9],
        inserted[1],
        inserted[2],
        *server.catalog[9:15],
        inserted[3],
        *server.catalog[15:],
        *inserted[4:],
    ]
    grown = ingest.run(params, store=store)
    assert grown.ok
    fetched = server.images()
    assert sorted(fetched) == sorted(f"/img/{n}-{n}.png" for n in range(100, 110))
    assert set(fetched.values()) == {1}
    assert grown.stages["download"].reused_items == 20
    assert grown.stages["describe"].reused_items == 20
    ids = grown.table("describe").column("id").to_pylist()
    assert ids == [e["id"] for e in server.catalog]  # catalog order, reused and new rows alike
    report = {r["category"]: r for r in grown.table("report").to_pylist()}
    assert sum(r["described"] for r in report.values()) == 30 and all(r["missing"] == 0 for r in report.values())

    fresh = ingest.run(params, store=tmp_path / "fresh")  # the same catalog from nothing
    server.images()
    assert grown.table("describe").equals(fresh.table("describe"))

    edited = dict(server.catalog[5], path="img/7-edited.png")  # one record now names another image
    server.catalog = [*server.catalog[:5], edited, *server.catalog[6:]]
    again = ingest.run(params, store=store)
    assert again.ok
    assert server.images() == Counter({"/img/7-edited.png": 1})
    described = {r["id"]: r for r in again.table("describe").to_pylist()}
    assert described[edited["id"]]["sha256"] == described["e7"]["sha256"]

    same = ingest.run(params, store=store)
    assert same.ok and server.images() == Counter()
    assert server.requests == Counter()  # images() cleared them: only the catalog was fetched
    assert same.stages["download"].reused_items == 30


# -- a CPU map over a flat-map, calls counted --------------------------------------------------


class Numbers(BaseModel):
    docs: list[str] = ["1 2 3"]
    log: str = ""
    factor: int = 2


numbers = Pipeline("item_reuse_numbers", params=Numbers)


@numbers.source
def documents(params: Numbers) -> Iterator[str]:
    yield from params.docs


@numbers.flat_map(over=documents, kind="cpu")
def split(document: str, params: Numbers) -> Iterator[int]:
    _log(params.log, f"split {document}")
    return (int(x) for x in document.split())


@numbers.map(over=split, kind="cpu")
def scaled(x: int, params: Numbers) -> int:
    _log(params.log, f"scaled {x}")
    return x * params.factor


@numbers.map(over=split, kind="cpu", reuse="never")
def announced(x: int, params: Numbers) -> int:
    _log(params.log, f"announced {x}")
    return x


@numbers.reduce(inputs=[scaled])
def total(values: pa.Table) -> int:
    return int(pa.compute.sum(values.column(0)).as_py() or 0)


def _log(path: str, line: str) -> None:
    with open(path, "a") as f:  # one write per call: processes append whole lines
        f.write(line + "\n")


def calls(log: Path) -> Counter[str]:
    found = Counter(log.read_text().splitlines()) if log.exists() else Counter()
    log.unlink(missing_ok=True)
    return found


def kinds(found: Counter[str]) -> Counter[str]:
    return Counter({k: sum(n for line, n in found.items() if line.startswith(k + " ")) for k in ("split", "scaled")})


@pytest.mark.parametrize("executor", ["processes", "threads"])
def test_a_cpu_map_over_a_flat_map_computes_only_new_items(executor: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    store = tmp_path / "store"
    docs = [" ".join(str(i) for i in range(d * 100, d * 100 + 100)) for d in range(3)]

    def run(docs: list[str], **extra):
        return numbers.run({"docs": docs, "log": str(log), **extra}, executor=executor, store=store)

    first = run(docs)
    assert first.ok and kinds(calls(log)) == Counter({"split": 3, "scaled": 300})

    grown = [docs[0], docs[1] + " 1000 1001", "5000 7", docs[2]]  # one document grew, one is new
    result = run(grown)
    assert result.ok
    found = calls(log)
    assert kinds(found) == Counter({"split": 2, "scaled": 3})  # 7 is an item computed before
    assert found["scaled 5000"] == 1 and found["scaled 1000"] == 1 and found["scaled 1001"] == 1
    assert sum(n for line, n in found.items() if line.startswith("announced ")) == 304  # never reused
    values = [int(x) for d in grown for x in d.split()]
    assert result.table("scaled").column("scaled").to_pylist() == [2 * v for v in values]
    assert result.table("total").column(0).to_pylist() == [2 * sum(values)]
    assert result.stages["scaled"].reused_items == 301

    edited = [docs[0], docs[1] + " 1000 1001", "5000 7777", docs[2]]
    run(edited)
    assert kinds(calls(log)) == Counter({"split": 1, "scaled": 1})  # 7777: the edited item alone

    changed = run(edited, factor=3)  # the stage's fingerprint changed: nothing of it is reused
    assert kinds(calls(log))["scaled"] == 304
    assert changed.table("scaled").column("scaled").to_pylist()[:3] == [0, 3, 6]


def test_a_damaged_part_is_not_reused_item_by_item(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import OrderedDict

    from pipelines.store import recent

    log = tmp_path / "calls.log"
    store = tmp_path / "store"
    params = {"docs": ["1 2 3 4"], "log": str(log)}
    numbers.run(params, executor="threads", store=store)
    calls(log)
    with sqlite3.connect(store / "ledger.sqlite") as db:
        paths = db.execute(
            "SELECT p.path FROM parts p JOIN objects o ON o.key = p.key WHERE o.stage = 'scaled'"
        ).fetchall()
    for (path,) in paths:  # every part of the stage: one byte each
        part = store / path
        data = bytearray(part.read_bytes())
        data[len(data) // 2] ^= 0xFF
        part.write_bytes(bytes(data))
    monkeypatch.setattr(recent, "_tables", OrderedDict())  # read the files, not what this process wrote
    monkeypatch.setattr(recent, "_bytes", 0)

    result = numbers.run({**params, "docs": ["1 2 3 4 5"]}, executor="threads", store=store)
    assert result.ok
    assert kinds(calls(log))["scaled"] == 5  # the damaged part's items were computed again
    assert result.table("scaled").column("scaled").to_pylist() == [2, 4, 6, 8, 10]


def test_item_hashes_are_recorded_with_parts(tmp_path: Path) -> None:
    from pipelines._engine import item_reuse

    log = tmp_path / "calls.log"
    numbers.run({"docs": ["1 2 3"], "log": str(log)}, executor="threads", store=tmp_path / "store")
    with Store(tmp_path / "store") as s:
        fp = s.ledger.query("SELECT fingerprint FROM run_stages WHERE stage = 'scaled'")[0][0]
        rows = s.ledger.item_parts("scaled", fp)
        hashes = [item_reuse.unpack(r["items"]) for r in rows]
        assert sum(len(h) for h in hashes) == 3  # one hash per item, aligned with each part's ids
        assert all(
            len(h) == len(item_reuse.id_array(IdSet.from_json(r["done"]))) for h, r in zip(hashes, rows, strict=True)
        )
        assert not s.ledger.item_parts("announced", fp)  # reuse="never": never indexed under scaled's


def test_item_hashes_tell_values_and_types_apart() -> None:
    from pipelines._engine.item_reuse import item_hashes

    t = pa.table({"a": ["x", "y", "x", None], "b": [1, 2, 1, 1]})
    h = item_hashes(t)
    assert h[0] == h[2] and len(set(h.tolist())) == 3 + (h[3] == h[0])
    assert h[3] != h[0]
    big = pa.table({"body": [b"a" * 1000, b"b" * 1000, b"a" * 1000]})
    hb = item_hashes(big)
    assert hb[0] == hb[2] != hb[1]
    assert item_hashes(pa.table({"a": [1]}))[0] != item_hashes(pa.table({"b": [1]}))[0]
    assert (
        item_hashes(pa.table({"a": pa.array([1], pa.int64())}))[0]
        != item_hashes(pa.table({"a": pa.array([1], pa.int32())}))[0]
    )


def test_the_switch_turns_item_reuse_off(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "from tests.test_item_reuse import numbers; import sys; "
        "r = numbers.run({'docs': sys.argv[1:2], 'log': sys.argv[2]}, executor='threads', store=sys.argv[3]); "
        "print(r.stages['scaled'].reused_items)"
    )
    log = tmp_path / "calls.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPELINES_ITEM_REUSE": "0"}
    for docs in ("1 2 3", "1 2 3 4"):
        out = subprocess.run(
            [sys.executable, "-c", code, docs, str(log), str(tmp_path / "store")],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == "0"
    assert kinds(calls(log))["scaled"] == 7


def test_the_index_file_goes_with_its_run_and_gc_removes_one_left_by_a_kill(tmp_path: Path) -> None:
    from pipelines.store import gc

    log = tmp_path / "calls.log"
    store = tmp_path / "store"
    numbers.run({"docs": ["1 2 3"], "log": str(log)}, executor="threads", store=store)
    result = numbers.run({"docs": ["1 2 3 4"], "log": str(log)}, executor="threads", store=store)
    assert result.stages["scaled"].reused_items == 3  # an index was built and used
    run_dir = store / "runs" / result.run_id
    assert not list(run_dir.glob(".items-*"))  # removed at the end of the run
    left = run_dir / ".items-scaled-0123456789ab.arrow"  # as a kill -9 would leave it
    left.write_bytes(b"index")
    with Store(store) as s:
        found = gc.collect(s)
    assert not left.exists()
    assert any(d.rel.endswith(left.name) for d in found.files)
    assert result.table("scaled").column("scaled").to_pylist() == [2, 4, 6, 8]
