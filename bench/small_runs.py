"""Small runs: a 10-item pipeline, from the command line and again and again in one process.

What a user pays for the smallest job: ``python -m pipelines run squares -q`` (a fresh
interpreter: imports, the store, a process pool, 10 items) against the seed's script, a
``ProcessPoolExecutor`` over the same 10 items in a fresh interpreter. Then the fixed cost
of a run once everything is imported: the same pipeline run repeatedly in one process
(``pipelines.run``, a fresh store each time) on processes, threads and inline, against a
``ProcessPoolExecutor`` started and used in-process each time. Checkpoints and the ledger
stay on throughout.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from .harness import ROOT, Context, Report, Row, Variant, interleave

NAME = "small_runs"
TITLE = "10-item run"
WARM_UP = False  # the command-line variants start cold; the in-process ones warm up below
CLI_GOAL = 5.0  # pipelines may take at most this many times the seed script's time

SQUARES = '''"""Ten squares on the process pool (bench ``small_runs``)."""

from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("squares")


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(10)


@pipeline.map(over=numbers, kind="cpu")
def square(x: int) -> int:
    return x * x
'''

SEED_SCRIPT = """
from concurrent.futures import ProcessPoolExecutor


def square(x):
    return x * x


if __name__ == "__main__":
    with ProcessPoolExecutor() as pool:
        print(sum(pool.map(square, range(10))))
"""


def _timed(cmd: list[str], cwd: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return {"seconds": seconds}


def run(ctx: Context) -> Report:
    report = Report(NAME)
    work = ctx.tempdir("small-")
    dags = work / "dags"
    dags.mkdir()
    (dags / "squares.py").write_text(SQUARES)
    seed = work / "seed.py"
    seed.write_text(SEED_SCRIPT)
    stores = iter(range(1_000_000))

    def cli() -> dict[str, float]:
        store = work / f"cli-store-{next(stores)}"
        cmd = [sys.executable, "-m", "pipelines", "run", "squares", "-q", "--dags", str(dags), "--store", str(store)]
        return _timed(cmd, ROOT)

    rounds = 1 if ctx.quick else 3 * ctx.repeat
    samples = interleave(
        [
            Variant("the seed's ProcessPoolExecutor script", lambda: _timed([sys.executable, str(seed)], work)),
            Variant("python -m pipelines run squares -q", cli, role="pipelines"),
        ],
        rounds,
        ctx.log,
    )
    anchor, p = samples["the seed's ProcessPoolExecutor script"], samples["python -m pipelines run squares -q"]
    row = Row(
        f"{TITLE} from the CLI (run squares -q)",
        "the seed's ProcessPoolExecutor script",
        anchor.median,
        p.median,
        "s",
        f"≤ {CLI_GOAL:g}× the script",
        None,
        error=p.error,
    )
    row.ok = row.ratio is not None and row.ratio >= 1 / CLI_GOAL
    report.rows.append(row)
    report.samples.update(samples)
    report.extra["warm"] = warm = _warm_runs(ctx, dags, work, 5 if ctx.quick else 21)
    for executor, figures in warm.items():
        if executor != "anchor":
            row = Row(
                f"{TITLE} in-process, warm, on {executor}",
                "ProcessPoolExecutor started and mapped in-process",
                warm["anchor"]["median"],
                figures["median"],
                "s",
                "reported",
                None,
            )
            report.rows.append(row)
        first = f", first run {figures['first'] * 1000:.0f} ms" if "first" in figures else ""
        report.notes.append(f"warm in-process {executor}: median {figures['median'] * 1000:.1f} ms{first}")
    return report


def _warm_runs(ctx: Context, dags: Path, work: Path, rounds: int) -> dict[str, dict[str, float]]:
    """Medians of repeated in-process runs, the executors interleaved round by round."""
    from concurrent.futures import ProcessPoolExecutor

    import pipelines
    from pipelines.define.loader import load

    from .work import square

    pipeline = load("squares", dags)
    executors = ["processes", "threads", "inline"]
    first: dict[str, float] = {}
    times: dict[str, list[float]] = {e: [] for e in [*executors, "anchor"]}
    for i in range(rounds + 1):
        for executor in executors[i % 3 :] + executors[: i % 3]:
            t0 = time.perf_counter()
            result = pipelines.run(pipeline, store=work / f"warm-{executor}-{i}", executor=executor)
            seconds = time.perf_counter() - t0
            if not result.ok:
                raise RuntimeError(f"warm run on {executor}: {result.error}")
            if i == 0:
                first[executor] = seconds
            else:
                times[executor].append(seconds)
        t0 = time.perf_counter()
        with ProcessPoolExecutor(2) as pool:
            assert sum(pool.map(square, range(10))) == 285
        if i:
            times["anchor"].append(time.perf_counter() - t0)
    ctx.log(f"    warm runs: {rounds} rounds after a first one")
    out: dict[str, dict[str, float]] = {}
    for name, values in times.items():
        out[name] = {"median": statistics.median(values)}
        if name in first:
            out[name]["first"] = first[name]
    return out
