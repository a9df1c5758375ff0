"""Start-up: how long the command line takes to answer, in a fresh interpreter each time.

``python -m pipelines --help`` and ``python -m pipelines list`` (the repository's ``dags/``)
against the anchor ``python -c "import dask, distributed, pyarrow, pandas, ray"`` — what a
CLI that imports its backends eagerly would pay. ``python -c pass`` is the interpreter's
own floor (reported, not compared). Three times as many rounds as ``--repeat``: each is short.
"""

from __future__ import annotations

import subprocess
import sys
import time

from .harness import ROOT, Context, Report, Row, Variant, interleave

NAME = "startup"
TITLE = "start-up"
WARM_UP = False
GOAL_SECONDS = 0.3


def timed(args: list[str]) -> dict[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return {"seconds": seconds}


def run(ctx: Context) -> Report:
    report = Report(NAME)
    eager = "import dask, distributed, pyarrow, pandas, ray"
    variants = [
        Variant("python -c pass", lambda: timed(["-c", "pass"]), role="info"),
        Variant("eager import (dask, distributed, pyarrow, pandas, ray)", lambda: timed(["-c", eager])),
        Variant("pipelines --help", lambda: timed(["-m", "pipelines", "--help"]), role="pipelines"),
        Variant("pipelines list", lambda: timed(["-m", "pipelines", "list"]), role="pipelines"),
    ]
    rounds = 1 if ctx.quick else 3 * ctx.repeat
    samples = interleave(variants, rounds, ctx.log)
    report.samples = samples
    anchor = samples["eager import (dask, distributed, pyarrow, pandas, ray)"]
    for name in ("pipelines --help", "pipelines list"):
        p = samples[name]
        row = Row(
            f"{TITLE}: python -m {name}",
            "eager import of the 5 libraries",
            anchor.median,
            p.median,
            "s",
            f"≤ {GOAL_SECONDS} s",
            None,
            error=p.error,
        )
        row.ok = p.median is not None and p.median <= GOAL_SECONDS
        report.rows.append(row)
    floor = samples["python -c pass"].median
    if floor is not None:
        report.notes.append(f"interpreter floor (python -c pass): {floor * 1000:.0f} ms; {rounds} rounds, medians")
    return report
