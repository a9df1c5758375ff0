"""``python -m bench``: every workload, anchors and pipelines side by side, one table.

    python -m bench                      # everything, 3 rounds each (several minutes)
    python -m bench --quick              # every workload small and once (a smoke test, < 90 s)
    python -m bench --only tiny_map,resume --repeat 5
    python -m bench --json bench.json    # all figures, raw samples included
    python -m bench --clusters           # also Dask and Ray (Ray inside a loopback-only namespace)

Each workload runs in its own child process (so one workload's memory, pools and clusters
cannot disturb the next); inside it, anchors and pipelines alternate round by round.
Exit status: 0 when every workload ran — goals missed or not; 1 when a workload crashed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .harness import ROOT, Context, Report, Row, fmt_value, process_tree, warm_up

WORKLOADS = [
    "tiny_map",
    "cpu_scaling",
    "async_io",
    "ingest",
    "checkpoint",
    "many_stages",
    "memory",
    "startup",
    "small_runs",
    "resume",
    "clusters",
]
OPTIONAL = {"clusters"}  # only with --clusters
DEFAULT_REPEAT = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="every workload small and once (smoke test)")
    parser.add_argument(
        "--repeat", type=int, default=None, help=f"rounds per workload (default {DEFAULT_REPEAT}; --quick: 1)"
    )
    parser.add_argument("--only", default=None, help="comma-separated workloads: " + ", ".join(WORKLOADS))
    parser.add_argument("--json", dest="json_path", default=None, help="write every figure to this JSON file")
    parser.add_argument(
        "--clusters",
        action="store_true",
        help="also run Dask LocalCluster and Ray (Ray inside `unshare -n`, loopback only)",
    )
    parser.add_argument("--tmp", default=None, help="folder for stores and generated data (default: system temp)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one workload here
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    names = WORKLOADS if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    if args.only is None and not args.clusters:
        names = [n for n in names if n not in OPTIONAL]
    args.names = names
    return args


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cache_dir() -> Path:
    path = Path(os.environ.get("BENCH_CACHE") or Path(tempfile.gettempdir()) / "pipelines-bench-cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- one workload, in a child process ------------------------------------------------------------


def run_child(args: argparse.Namespace) -> int:
    name = args.child
    module = importlib.import_module(f"bench.{name}")
    tmp = Path(args.tmp)
    ctx = Context(quick=args.quick, repeat=args.repeat, clusters=args.clusters, tmp=tmp, cache=cache_dir(), log=log)
    warm = {}
    if getattr(module, "WARM_UP", True):
        warm = warm_up(ctx)
        log("    warm-up: " + ", ".join(f"{k} {v:.2f} s" for k, v in warm.items() if isinstance(v, float)))
    t0 = time.perf_counter()
    report: Report = module.run(ctx)
    report.extra["warm_up"] = warm
    report.seconds = time.perf_counter() - t0
    Path(args.result).write_text(json.dumps(report.to_json(), default=str))
    return 0


def run_workload(name: str, args: argparse.Namespace, tmp_root: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Run one workload in a child process; return its report (JSON) or why it crashed."""
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp_root))
    result = work / "result.json"
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "--child",
        name,
        "--result",
        str(result),
        "--tmp",
        str(work),
        "--repeat",
        str(args.repeat),
    ]
    if args.quick:
        cmd.append("--quick")
    if args.clusters:
        cmd.append("--clusters")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PIPELINES_STORE", None)
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        with MachineLoad(proc.pid) as load:
            proc.wait()
        if proc.returncode != 0 or not result.exists():
            return None, f"workload process exited with status {proc.returncode}"
        report = json.loads(result.read_text())
        report["load"] = load.summary()
        return report, None
    finally:
        shutil.rmtree(work, ignore_errors=True)


class MachineLoad:
    """How busy the machine was with *other* work while a workload ran (a noise indicator).

    Busy CPU time of the whole machine minus the CPU time of the workload's process tree,
    sampled live every 0.1 s (pool workers are not always reaped by their parent, so
    ``RUSAGE_CHILDREN`` would miss them), as a share of all cores over the wall time.
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        import psutil

        self._root = psutil.Process(pid)
        self._cpu: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-load", daemon=True)
        self.interval = interval

    def _sample(self) -> None:
        import psutil

        for proc in process_tree(self._root):
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    key = (proc.pid, proc.create_time())
                self._cpu[key] = times.user + times.system
            except psutil.Error:
                continue

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> MachineLoad:
        import psutil

        self._machine = psutil.cpu_times()
        self._t0 = time.perf_counter()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import psutil

        self._stop.set()
        self._thread.join()
        machine = psutil.cpu_times()
        self.wall = time.perf_counter() - self._t0
        busy = lambda t: t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)  # noqa: E731
        self.busy = busy(machine) - busy(self._machine)
        self.own = sum(self._cpu.values())

    def summary(self) -> dict[str, float]:
        cores = os.cpu_count() or 1
        other = max(0.0, self.busy - self.own)
        return {
            "wall": self.wall,
            "machine_busy_s": self.busy,
            "bench_cpu_s": self.own,
            "other_share": other / (self.wall * cores) if self.wall else 0.0,
        }


# -- the table --------------------------------------------------------------------------------

HEADERS = ["workload", "best anchor", "anchor", "pipelines", "ratio (≥1: pipelines better)", "goal", "ok"]


def row_cells(row: Row) -> list[str]:
    ratio = row.ratio
    if row.error:
        return [
            row.workload,
            row.anchor or "—",
            fmt_value(row.anchor_value, row.unit),
            fmt_value(row.pipelines_value, row.unit),
            "—",
            row.goal,
            "✗ ERROR",
        ]
    ok = "—" if row.ok is None else ("✓" if row.ok else "✗")
    return [
        row.workload,
        row.anchor or "—",
        fmt_value(row.anchor_value, row.unit),
        fmt_value(row.pipelines_value, row.unit),
        fmt_ratio(ratio),
        row.goal,
        ok,
    ]


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    return f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.3f}×"


def render(rows: list[Row]) -> str:
    cells = [HEADERS] + [row_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
    right = {2, 3, 4}

    def line(c: list[str]) -> str:
        return "  ".join(
            x.rjust(w) if i in right else x.ljust(w) for i, (x, w) in enumerate(zip(c, widths, strict=True))
        ).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(c) for c in cells[1:]]
    return "\n".join(out)


def rows_of(report: dict[str, Any]) -> list[Row]:
    rows = []
    for r in report["rows"]:
        r = dict(r)
        r.pop("ratio", None)
        rows.append(Row(**r))
    return rows


def environment() -> dict[str, Any]:
    def version(mod: str) -> str | None:
        try:
            from importlib.metadata import version as v

            return v(mod)
        except Exception:
            return None

    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "pipelines", "executors", "stages", "dags"],
                cwd=ROOT,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    except OSError:
        rev, dirty = None, None
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "git": rev,
        "engine_dirty": dirty,
        "versions": {
            m: version(m) for m in ("pyarrow", "pandas", "dask", "distributed", "ray", "joblib", "aiohttp", "psutil")
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else DEFAULT_REPEAT
    if args.child:
        return run_child(args)
    tmp_root = Path(tempfile.mkdtemp(prefix="pipelines-bench-", dir=args.tmp))
    started = time.perf_counter()
    reports: list[dict[str, Any]] = []
    rows: list[Row] = []
    crashed = []
    try:
        for name in args.names:
            log(f"== {name} ({'quick' if args.quick else f'{args.repeat} rounds'})")
            t0 = time.perf_counter()
            report, crash = run_workload(name, args, tmp_root)
            if report is None:
                crashed.append(name)
                rows.append(Row(name, None, None, None, "", "", False, error=f"bench crashed: {crash}"))
                reports.append({"workload": name, "crash": crash})
                continue
            reports.append(report)
            rows.extend(rows_of(report))
            other = report["load"]["other_share"]
            log(f"   {name}: {time.perf_counter() - t0:.1f} s; other processes used {other:.0%} of the machine")
            if other > 0.05:
                report.setdefault("notes", []).append(
                    f"NOISE: other processes used about {other:.0%} of the machine's CPU while this workload ran"
                )
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    total = time.perf_counter() - started

    env = environment()
    mode = "quick (small sizes, 1 round)" if args.quick else f"{args.repeat} rounds, medians"
    print()
    print(
        f"pipelines benchmark — {mode}; {env['cpus']} CPUs, Python {env['python']}, git {env['git'] or 'unknown'}"
        f"{' (engine has uncommitted changes)' if env['engine_dirty'] else ''}"
    )
    print(render(rows))
    print(
        "ratio = anchor ÷ pipelines (time: pipelines' speed-up; MB: its memory saving); ≥ 1 means pipelines "
        "is better. Figures are medians of one run on one machine: compare ratios, not absolute values."
    )
    for report in reports:
        notes = report.get("notes") or []
        errors = [f"{r['workload']}: {r['error']}" for r in report.get("rows", []) if r.get("error")]
        if report.get("crash"):
            errors.append(f"crashed: {report['crash']}")
        if notes or errors:
            print(f"\n[{report['workload']}]")
            for text in errors:
                print(f"  ! {text}")
            for text in notes:
                print(f"  - {text}")
    print(f"\ntotal {total:.0f} s", flush=True)
    if args.json_path:
        Path(args.json_path).write_text(
            json.dumps(
                {
                    "mode": mode,
                    "quick": args.quick,
                    "repeat": args.repeat,
                    "environment": env,
                    "seconds": total,
                    "workloads": reports,
                },
                indent=2,
                default=str,
            )
        )
        print(f"figures written to {args.json_path}")
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
