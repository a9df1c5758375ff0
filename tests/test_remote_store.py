"""A store on an object store: batch files on S3 (a real S3 server, moto, on 127.0.0.1)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pipelines
from pipelines import RunStatus, UsageError
from pipelines.store import Store

pytest.importorskip("moto")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on loopback with one bucket; yields the store URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "PIPELINES_LEDGER_DIR": str(tmp_path_factory.mktemp("ledgers")),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        while True:  # until the server listens (pytest-timeout bounds a hang)
            assert server.poll() is None, f"moto.server exited with {server.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        import pyarrow.fs as pafs

        fs = pafs.FileSystem.from_uri("s3://pipelines-test?region=us-east-1&allow_bucket_creation=true")[0]
        fs.create_dir("pipelines-test")
        yield "s3://pipelines-test/store?region=us-east-1"
    finally:
        server.kill()
        server.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_batches_go_to_s3_and_are_reused(s3: str, load) -> None:
    first = pipelines.run(load("counted"), {"n": 3000}, store=s3)
    assert first.status is RunStatus.OK
    assert first.table("total").to_pylist() == [{"rows": 3000, "sum": sum(x * x + 1 for x in range(3000))}]
    with Store(s3) as store:
        paths = [row["path"] for row in store.ledger.query("SELECT path FROM parts")]
        assert paths and all(p.startswith("runs/") for p in paths)  # relative to the store: it can move
        assert all(
            p.path.startswith("s3://pipelines-test/store/runs/")
            for p in store.ledger.parts(store.ledger.query("SELECT key FROM parts LIMIT 1")[0]["key"])
        )
    second = pipelines.run(load("counted"), {"n": 3000}, store=s3)
    assert second.stages["square"].reused_items == 3000 and second.stages["plus_one"].reused_items == 3000


def test_a_damaged_object_is_recomputed(s3: str, load) -> None:
    import pyarrow.fs as pafs

    first = pipelines.run(load("counted"), {"n": 1000}, store=s3, fresh=True)
    with Store(s3) as store:
        path = store.ledger.absolute(
            store.ledger.query(
                "SELECT p.path FROM parts p JOIN objects o ON o.key = p.key WHERE o.stage = 'square' LIMIT 1"
            )[0]["path"]
        )
    fs = pafs.FileSystem.from_uri("s3://pipelines-test?region=us-east-1")[0]
    inner = path.removeprefix("s3://").split("?")[0]
    with fs.open_output_stream(inner) as out:
        out.write(b"not arrow")
    again = pipelines.run(load("counted"), {"n": 1000}, store=s3)
    assert again.status is RunStatus.OK
    assert again.stages["square"].reused_items < 1000
    assert again.table("total").equals(first.table("total"))


def test_an_unreachable_store_is_a_usage_error_at_start(tmp_path: Path, load, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("PIPELINES_LEDGER_DIR", str(tmp_path))
    with pytest.raises(UsageError, match="not writable"):
        pipelines.run(load("counted"), {"n": 10}, store="s3://nowhere/store?region=us-east-1")


def test_a_store_copied_to_another_prefix_rebuilds_its_ledger_and_reuses_everything(s3: str, load) -> None:
    """Relative paths and self-describing parts work on S3 too: the copy has no ledger (another
    URL is another ledger folder), rebuilds it from its objects and reads only its own."""
    import pyarrow.fs as pafs

    first = pipelines.run(load("counted"), {"n": 2000}, store=s3)
    fs = pafs.FileSystem.from_uri("s3://pipelines-test?region=us-east-1")[0]
    copied = 0
    for info in fs.get_file_info(pafs.FileSelector("pipelines-test/store/runs", recursive=True)):
        if info.type == pafs.FileType.File:
            fs.copy_file(info.path, info.path.replace("pipelines-test/store/", "pipelines-test/copy/", 1))
            copied += 1
    assert copied
    copy = s3.replace("/store?", "/copy?")
    with Store(copy) as store:
        assert store.repaired is not None and store.repaired.adopted > 0
        # only the object an earlier test overwrote with junk is left out
        assert not any(first.run_id in rel for rel in store.repaired.damaged)
        parts = store.ledger.parts(store.ledger.query("SELECT key FROM parts LIMIT 1")[0]["key"])
        assert all(p.path.startswith("s3://pipelines-test/copy/runs/") for p in parts)
    again = pipelines.run(load("counted"), {"n": 2000}, store=copy)
    assert again.stages["square"].reused_items == 2000 and again.stages["plus_one"].reused_items == 2000
    assert again.table("total").equals(first.table("total"))
