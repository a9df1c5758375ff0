"""Timing, interleaving, medians and peak memory of a process tree.

Every workload runs its variants (the hand-written *anchors* and *pipelines*) back to back,
in the same process, ``repeat`` times, rotating the order each round so that no variant
always runs first (cold caches) or last (a warm machine); the table reports medians.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # the repository
BENCH_DAGS = ROOT / "bench" / "dags"
MB = 1 << 20


# -- what a workload reports --------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table.

    ``better`` says which direction is good for the figures: ``lower`` (seconds, megabytes)
    or ``higher``. ``ratio`` is always normalised so that ≥ 1 means pipelines is better
    (anchor time / pipelines time, anchor MB / pipelines MB).
    """

    workload: str
    anchor: str | None
    anchor_value: float | None
    pipelines_value: float | None
    unit: str
    goal: str
    ok: bool | None
    better: str = "lower"
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        a, p = self.anchor_value, self.pipelines_value
        if a is None or p is None or a <= 0 or p <= 0:
            return None
        return a / p if self.better == "lower" else p / a

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = self.ratio
        return out


@dataclass
class Context:
    """What every workload gets: sizes, repetitions, where to put files."""

    quick: bool
    repeat: int
    clusters: bool
    tmp: Path
    cache: Path
    log: Callable[[str], None]

    def tempdir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.tmp))


# -- timing -------------------------------------------------------------------------------------


@dataclass
class Variant:
    """One way of doing a workload's job.

    ``fn`` does the job once; it returns ``None`` (the harness times it) or a dict of extra
    figures, where ``"seconds"`` (if present) replaces the measured time. ``scale`` multiplies
    the time (for an anchor run on fewer items and scaled up). ``setup`` runs untimed before each call.
    """

    name: str
    fn: Callable[[], dict[str, Any] | None]
    role: str = "anchor"  # or "pipelines"
    scale: float = 1.0
    setup: Callable[[], None] | None = None
    note: str = ""


@dataclass
class Samples:
    name: str
    role: str
    seconds: list[float] = field(default_factory=list)
    extras: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    note: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    def extra_median(self, key: str) -> float | None:
        values = [e[key] for e in self.extras if e.get(key) is not None]
        return statistics.median(values) if values else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "seconds": self.seconds,
            "median": self.median,
            "extras": self.extras,
            "error": self.error,
            "note": self.note,
        }


def interleave(variants: list[Variant], repeat: int, log: Callable[[str], None] = print) -> dict[str, Samples]:
    """Run every variant ``repeat`` times, round-robin, rotating the order each round.

    A variant that raises is recorded with its error and not run again; the others go on.
    """
    out = {v.name: Samples(v.name, v.role, note=v.note) for v in variants}
    for r in range(repeat):
        k = r % len(variants)
        for v in variants[k:] + variants[:k]:
            s = out[v.name]
            if s.error is not None:
                continue
            if v.setup is not None:
                v.setup()
            gc.collect()
            t0 = time.perf_counter()
            try:
                extra = v.fn() or {}
            except Exception as exc:  # reported in the table, the bench goes on
                s.error = describe_error(exc)
                log(f"    {v.name}: FAILED {s.error}")
                continue
            elapsed = time.perf_counter() - t0
            seconds = float(extra.get("seconds", elapsed)) * v.scale
            s.seconds.append(seconds)
            s.extras.append(extra)
            log(f"    round {r + 1}/{repeat}  {v.name:<28} {seconds:9.3f} s")
    return out


def describe_error(exc: BaseException) -> str:
    """``Type: message (at pipelines/_engine/runner.py:216 in origin)``: the deepest frame in the project."""
    import traceback

    text = f"{type(exc).__name__}: {str(exc)[:300]}"
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if f.filename.startswith(str(ROOT)) and "/bench/" not in f.filename and "/.venv/" not in f.filename
    ]
    if frames:
        f = frames[-1]
        text += f" (at {Path(f.filename).relative_to(ROOT)}:{f.lineno} in {f.name})"
    return text


def best(samples: dict[str, Samples], names: list[str] | None = None) -> Samples | None:
    """The anchor with the lowest median time (among ``names``, if given)."""
    pool = [
        s
        for s in samples.values()
        if s.role == "anchor" and s.median is not None and (names is None or s.name in names)
    ]
    return min(pool, key=lambda s: s.median) if pool else None  # type: ignore[arg-type, return-value]


def error_row(workload: str, what: str, exc: BaseException | str, goal: str = "") -> Row:
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return Row(workload, None, None, None, "", goal, False, error=f"{what}: {text}")


# -- memory of a process tree ---------------------------------------------------------------------


class TreeMemory:
    """Samples the resident memory of a process and all its descendants, summed, in a thread.

    ``peak_rss`` is the largest sum of RSS seen (what the goals are about); ``peak_anon`` the
    largest sum of RSS minus file-backed pages (memory-mapped files, shared libraries: the
    kernel can drop those at will); ``peak_pss`` the largest sum of PSS, sampled every
    ``pss_every`` samples (it splits pages shared by forked processes instead of counting
    them once per process). ``peak_breakdown`` is each process's share at the RSS peak.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.02, pss_every: int = 5) -> None:
        import psutil

        self._root = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.pss_every = pss_every
        self.peak_rss = 0
        self.peak_anon = 0
        self.peak_pss = 0
        self.peak_processes = 0
        self.peak_breakdown: list[tuple[int, str, int, int]] = []  # (pid, role, rss, anon) at the peak
        self.samples = 0
        self._roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)

    def _role(self, proc: Any) -> str:
        role = self._roles.get(proc.pid)
        if role is None:
            role = self._roles[proc.pid] = _role(proc, self._root)
        return role

    def _sample(self) -> None:
        import psutil

        rss = anon = pss = 0
        with_pss = self.samples % self.pss_every == 0
        breakdown = []
        tree = process_tree(self._root)
        if not tree:
            return
        for proc in tree:
            try:
                info = proc.memory_info()
                if with_pss:
                    pss += proc.memory_full_info().pss
            except psutil.Error:
                continue
            shared = getattr(info, "shared", 0)
            rss += info.rss
            anon += info.rss - shared
            breakdown.append((proc, info.rss, info.rss - shared))
        self.samples += 1
        if rss > self.peak_rss:
            self.peak_rss = rss
            self.peak_breakdown = [(p.pid, self._role(p), r, a) for p, r, a in breakdown]
        self.peak_anon = max(self.peak_anon, anon)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_processes = max(self.peak_processes, len(breakdown))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _role(proc: Any, root: Any) -> str:
    """A short name for a process of the tree, from its command line and its parent's."""
    if proc.pid == root.pid:
        return "driver"
    try:
        cmd = " ".join(proc.cmdline())
        parent = proc.parent()
        parent_cmd = " ".join(parent.cmdline()) if parent is not None else ""
    except Exception:  # it may be gone
        return "?"
    if "resource_tracker" in cmd:
        return "resource tracker"
    if "forkserver" in cmd:
        return "worker" if "forkserver" in parent_cmd else "forkserver"
    if "loky" in cmd:
        return "loky worker"
    if "multiprocessing" in cmd:
        return "worker"
    return cmd[-60:]


def run_measured(
    cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 3600, cwd: Path = ROOT
) -> dict[str, Any]:
    """Run a command; return its wall time, exit code, output and the peak memory of its tree."""
    full_env = {**os.environ, **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeMemory(proc.pid) as mem:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "returncode": proc.returncode,
        "stdout": out,
        "stderr": err,
        "peak_rss": mem.peak_rss,
        "peak_anon": mem.peak_anon,
        "peak_pss": mem.peak_pss,
        "peak_processes": mem.peak_processes,
        "peak_breakdown": mem.peak_breakdown,
        "samples": mem.samples,
    }


# -- small helpers ------------------------------------------------------------------------------


def python() -> str:
    return sys.executable


@contextlib.contextmanager
def fresh_store(ctx: Context, prefix: str = "store-") -> Iterator[Path]:
    """A new, empty store directory, removed afterwards."""
    path = ctx.tempdir(prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def load_pipeline(name: str) -> Any:
    from pipelines.define.loader import load

    return load(name, BENCH_DAGS)


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 0.001:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return fmt_seconds(value)
    if unit == "MB":
        return f"{value:,.0f} MB"
    if unit == "ms/stage":
        return f"{value:.2f} ms/stage"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "items":
        return f"{value:,.0f} items"
    return f"{value:g} {unit}".strip()


def nice_int(n: int) -> str:
    return f"{n:,}"


@dataclass
class Report:
    """What one workload hands back: its table rows and every figure behind them."""

    workload: str
    rows: list[Row] = field(default_factory=list)
    samples: dict[str, Samples] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "rows": [r.to_json() for r in self.rows],
            "samples": {k: v.to_json() for k, v in self.samples.items()},
            "notes": self.notes,
            "extra": self.extra,
            "seconds": self.seconds,
        }


def warm_up(ctx: Context) -> dict[str, float]:
    """Pay the bench process's one-time costs before anything is timed.

    Imports, the forkserver that pipelines' process pools fork from (started once per driver
    process), loky's reusable workers and the first fork of a ``multiprocessing.Pool``.
    Every timed variant still starts its own pool; the start-up workload times cold starts.
    """
    import multiprocessing

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        import pipelines

        with fresh_store(ctx, "warm-") as store:
            pipelines.run(load_pipeline("bench_tiny"), {"n": 1000}, store=store)
        out["pipelines_first_run"] = time.perf_counter() - t0
    except Exception as exc:  # the workload's pipelines rows will say what is wrong
        ctx.log(f"    warm-up: pipelines failed: {describe_error(exc)}")
        out["pipelines_error"] = describe_error(exc)
    t0 = time.perf_counter()
    from joblib import Parallel, delayed

    from .work import square

    Parallel(n_jobs=2)(delayed(square)(x) for x in range(100))
    out["joblib_first_call"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with multiprocessing.Pool(2) as pool:
        pool.map(square, range(100))
    out["pool_first_call"] = time.perf_counter() - t0
    return out


def process_tree(root: Any) -> list[Any]:
    """``root`` and all its descendants (psutil processes); empty if ``root`` is gone."""
    import psutil

    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
