"""Resume and reuse with real processes: kill -9, Ctrl-C, failed items, damaged checkpoints, edits.

Stages of tests/dags/counted.py log every call to a file, so each test can assert not only
that the final output equals an uninterrupted run's, but that a resume computed exactly the
work that was not finished: the items the ledger did not hold when the run stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

import pipelines
from pipelines import RunStatus
from pipelines.store import Store

from .conftest import ROOT, TEST_DAGS, cli
from .helpers import done_in_ledger, run_id_of, wait_gone
from .test_report import summary_rows


def expected_total(n: int) -> dict[str, int]:
    return {"rows": n, "sum": sum(x * x + 1 for x in range(n))}


def calls(log: Path, start: int = 0) -> Counter[str]:
    lines = log.read_text().splitlines()[start:] if log.exists() else []
    return Counter(line.split()[0] for line in lines)


def final_total(store: Path, run_id: str) -> dict[str, int]:
    from pipelines.store.outputs import read_stage

    with Store(store) as s:
        return read_stage(s, run_id, "total").to_pylist()[0]


class TestFailedItems:
    def test_resume_computes_only_the_failed_items(self, load, store: Path, tmp_path: Path, monkeypatch) -> None:
        log = tmp_path / "calls.log"
        monkeypatch.setenv("COUNTED_LOG", str(log))
        monkeypatch.setenv("COUNTED_FAIL", "5,4000,9999")
        first = pipelines.run(load("counted_skip"), {"n": 10_000}, store=store)
        assert first.status is RunStatus.PARTIAL and first.failed_items == 3
        before = len(log.read_text().splitlines())

        monkeypatch.delenv("COUNTED_FAIL")  # the cause is fixed
        resumed = pipelines.resume(first.run_id, store=store)
        assert resumed.status is RunStatus.OK
        assert calls(log, before) == {"square": 3, "plus_one": 3, "total": 1}
        assert resumed.table("total").to_pylist()[0] == expected_total(10_000)
        assert resumed.table("plus_one").column("plus_one").to_pylist() == [x * x + 1 for x in range(10_000)]

    def test_the_hint_line_has_counts_and_the_command(self, store: Path) -> None:
        proc = cli(
            "run",
            "counted_skip",
            "--dags",
            str(TEST_DAGS),
            "--store",
            str(store),
            "--param",
            "n=10000",
            env={"COUNTED_FAIL": "1,2,3"},
            check=0,
        )
        run_id = run_id_of(proc.stdout)
        line = next(ln for ln in proc.stdout.splitlines() if "failed in stage" in ln)
        assert "3 of 10,000 items failed in stage 'square' (ValueError: item 1 is broken)" in line
        assert line.endswith(f"python -m pipelines resume {run_id} --store {store}")

    def test_fail_policy_resume_finishes_the_rest(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "calls.log"
        env = {"COUNTED_LOG": str(log), "COUNTED_FAIL": "700"}
        proc = cli(
            "run", "counted", "--dags", str(TEST_DAGS), "--store", str(store), "--param", "n=5000", env=env, check=1
        )
        assert "stage 'square'" in proc.stdout + proc.stderr and "item 700 is broken" in proc.stdout
        run_id = run_id_of(proc.stdout)
        done = done_in_ledger(store)
        before = len(log.read_text().splitlines())
        cli("resume", run_id, "--store", str(store), env={"COUNTED_LOG": str(log)}, check=0)
        assert calls(log, before)["square"] == 5000 - done["square"]
        assert calls(log, before)["plus_one"] == 5000 - done.get("plus_one", 0)
        assert final_total(store, run_id) == expected_total(5000)


def start_run(store: Path, log: Path, n: int, delay: float, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "COUNTED_LOG": str(log),
        "COUNTED_DELAY": str(delay),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines",
            "run",
            "counted",
            "--dags",
            str(TEST_DAGS),
            "--store",
            str(store),
            "--param",
            f"n={n}",
            "--quiet",
            *args,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for_calls(log: Path, at_least: int, proc: subprocess.Popen[str]) -> None:
    """Wait for ``at_least`` logged calls; fail if the run ends first (pytest-timeout bounds a hang)."""
    while not (log.exists() and sum(1 for _ in log.open()) >= at_least):
        if proc.poll() is not None:
            pytest.fail(f"run ended before {at_least} calls:\n{proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.02)


@pytest.mark.slow
class TestKill:
    N = 12_000

    @pytest.mark.parametrize("fraction", [0.03, 0.45, 0.9])
    def test_kill_9_then_resume_redoes_only_unfinished_work(self, fraction: float, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "calls.log"
        proc = start_run(store, log, self.N, 0.0002)
        wait_for_calls(log, int(2 * self.N * fraction), proc)
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert not wait_gone(children), "worker processes outlived the killed driver"
        done = done_in_ledger(store)
        before = len(log.read_text().splitlines())
        out = cli("runs", "--store", str(store), check=0).stdout
        assert "crashed" in out
        resumed = cli("resume", "latest", "--store", str(store), env={"COUNTED_LOG": str(log)}, check=0)
        run_id = run_id_of(resumed.stdout)
        redo = calls(log, before)
        assert redo["square"] == self.N - done.get("square", 0)
        assert redo["plus_one"] == self.N - done.get("plus_one", 0)
        assert redo["total"] == 1
        assert final_total(store, run_id) == expected_total(self.N)

    def test_ctrl_c_ends_cleanly_with_the_hint_and_resumes(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "calls.log"
        proc = start_run(store, log, self.N, 0.0002)
        wait_for_calls(log, self.N // 2, proc)
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        os.kill(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 130, output
        assert "interrupted" in output and "resume with: python -m pipelines resume" in output
        assert not wait_gone(children), "child processes outlived the interrupted run"
        run_id = run_id_of(output)
        done = done_in_ledger(store)
        before = len(log.read_text().splitlines())
        cli("resume", run_id, "--store", str(store), env={"COUNTED_LOG": str(log)}, check=0)
        assert calls(log, before)["square"] == self.N - done["square"]
        assert final_total(store, run_id) == expected_total(self.N)

    def test_a_second_resume_of_a_running_run_is_refused(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "calls.log"
        proc = start_run(store, log, self.N, 0.0005)
        try:
            wait_for_calls(log, 100, proc)
            run_id = Store(store).ledger.latest_run()["id"]
            second = cli("resume", run_id, "--store", str(store), check=2)
            assert f"run {run_id} is already running" in second.stderr
            assert "Traceback" not in second.stderr
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class TestReuse:
    def test_truncated_checkpoint_is_recomputed_with_a_warning(
        self, load, store: Path, tmp_path: Path, monkeypatch
    ) -> None:
        log = tmp_path / "calls.log"
        monkeypatch.setenv("COUNTED_LOG", str(log))
        first = pipelines.run(load("counted"), {"n": 3000}, store=store)
        part = sorted((store / "runs" / first.run_id / "square").glob("*.arrow"))[-1]
        with Store(store) as s:
            rows = s.ledger.query("SELECT rows FROM parts WHERE path=?", (str(part.relative_to(store)),))[0]["rows"]
        part.write_bytes(part.read_bytes()[:-100])
        messages: list[str] = []

        class Collect(pipelines.RunObserver):
            def message(self, text: str, *, level: str = "info") -> None:
                messages.append(text)

        before = len(log.read_text().splitlines())
        second = pipelines.run(load("counted"), {"n": 3000}, store=store, observers=[Collect()])
        assert any("truncated" in m and part.name in m for m in messages), messages
        assert calls(log, before)["square"] == rows
        assert second.table("total").equals(first.table("total"))

    def test_editing_a_helper_invalidates_its_stage_and_downstream_only(self, store: Path, tmp_path: Path) -> None:
        dags = tmp_path / "dags"
        dags.mkdir()
        shutil.copy(TEST_DAGS / "helped.py", dags / "helped.py")
        first = cli("run", "helped", "--dags", str(dags), "--store", str(store), check=0)
        source = (dags / "helped.py").read_text()
        (dags / "helped.py").write_text(source.replace("return x * 3  # the helper", "return x * 4  # edited"))
        second = cli("run", "helped", "--dags", str(dags), "--store", str(store), "--wide", check=0)
        rows = summary_rows(second.stdout)
        assert rows["tripled"]["reused items"] == rows["tripled"]["items"] == "1,000"  # not affected: all reused
        assert rows["scaled"]["reused items"] == "0" and rows["scaled"]["recomputed because"] == "code changed"
        assert rows["total"]["reused items"] == "0" and rows["total"]["recomputed because"] == "inputs changed"
        assert first.returncode == 0

    def test_fresh_stage_recomputes_it_and_its_downstream(self, load, store: Path, tmp_path: Path, monkeypatch) -> None:
        log = tmp_path / "calls.log"
        monkeypatch.setenv("COUNTED_LOG", str(log))
        pipelines.run(load("counted"), {"n": 1000}, store=store)
        before = len(log.read_text().splitlines())
        again = pipelines.run(load("counted"), {"n": 1000}, store=store, fresh=["plus_one"])
        assert calls(log, before) == {"plus_one": 1000, "total": 1}
        assert again.stages["plus_one"].reason == "--fresh"
        before = len(log.read_text().splitlines())
        pipelines.run(load("counted"), {"n": 1000}, store=store, fresh=True)
        assert calls(log, before) == {"square": 1000, "plus_one": 1000, "total": 1}

    def test_a_run_can_be_resumed_on_another_executor(self, load, store: Path, tmp_path: Path, monkeypatch) -> None:
        monkeypatch.setenv("COUNTED_FAIL", "50")
        first = pipelines.run(load("counted"), {"n": 2000}, store=store, executor="threads")
        assert first.status is RunStatus.FAILED
        monkeypatch.delenv("COUNTED_FAIL")
        resumed = pipelines.resume(first.run_id, store=store, executor="processes")
        assert resumed.status is RunStatus.OK
        assert {s.backend for n, s in resumed.stages.items() if n != "numbers"} == {"processes"}
        assert resumed.table("total").to_pylist()[0] == expected_total(2000)


@pytest.mark.slow
class TestKillIngest:
    """kill -9 the flagship pipeline's driver while it downloads, and while it describes; resume."""

    SCALE = 40  # 15 images x 40 = 600 downloads

    @pytest.fixture
    def server(self):
        """The bundled data behind 0.2 s of latency, counting the image requests it answers."""
        import asyncio

        from aiohttp import web

        from stages.serve import serve_app

        data = ROOT / "data"
        hits: list[str] = []

        async def handle(request: web.Request) -> web.StreamResponse:
            path = request.match_info["path"]
            if path.startswith("images/"):
                hits.append(request.path_qs)  # counted when asked: a killed client asked too
            await asyncio.sleep(0.2)
            return web.FileResponse(data / path)

        app = web.Application()
        app.router.add_get("/{path:.*}", handle)
        with serve_app(app) as url:
            yield url, hits

    def run_ingest(self, store: Path, url: str, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines",
                "run",
                "ingest",
                "--store",
                str(store),
                "--quiet",
                "--param",
                f"base_url={url}",
                "--param",
                f"scale={self.SCALE}",
                *extra,
            ],
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "200"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    @pytest.mark.parametrize("moment", ["downloading", "describing"])
    def test_kill_9_during_ingest_then_resume(self, moment: str, server, store: Path, tmp_path: Path) -> None:
        url, hits = server
        total = 15 * self.SCALE
        reference = tmp_path / "reference"
        cli(
            "run",
            "ingest",
            "--store",
            str(reference),
            "--param",
            f"base_url={url}",
            "--param",
            f"scale={self.SCALE}",
            check=0,
        )
        hits.clear()

        proc = self.run_ingest(store, url)
        while proc.poll() is None:
            if moment == "downloading" and len(hits) >= total // 3:
                break
            if moment == "describing" and len(hits) >= total and done_in_ledger(store).get("describe", 0) >= 50:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before the kill:\n{proc.stdout.read() if proc.stdout else ''}"
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert not wait_gone(children)
        done = done_in_ledger(store)
        downloaded_before = len(hits)

        resumed = cli("resume", "latest", "--store", str(store), check=0)
        run_id = run_id_of(resumed.stdout)
        assert len(hits) - downloaded_before == total - done.get("download", 0), "downloads redone or skipped"
        with Store(store) as s, Store(reference) as ref:
            from pipelines.store.outputs import read_stage

            ref_id = ref.ledger.latest_run()["id"]
            for stage in ("describe", "by_category", "report"):
                assert read_stage(s, run_id, stage).equals(read_stage(ref, ref_id, stage)), stage
            stages = s.ledger.stages(run_id)
            assert stages["describe"]["items"] == total
