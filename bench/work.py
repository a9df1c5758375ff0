"""The work itself: plain functions shared by the anchors and the bench pipelines.

Everything here is importable (``bench.work``) so that every backend can pickle it by
reference: multiprocessing, loky, concurrent.futures, Dask, Ray and the pipelines' own
process workers run exactly the same code as the serial loop.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

# -- tiny map ---------------------------------------------------------------------------------


def square(x: int) -> int:
    return x * x


# -- CPU scaling -------------------------------------------------------------------------------


def burn(iterations: int) -> int:
    """Pure-Python arithmetic: about ``iterations`` × 40 ns on this kind of machine."""
    total = 0
    for i in range(iterations):
        total = (total + i * i) % 1_000_003
    return total


def calibrate_burn(target_seconds: float, *, rounds: int = 5) -> int:
    """Iterations of ``burn`` that take ``target_seconds`` here (median of a few timings)."""
    probe = 20_000
    timings = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        burn(probe)
        timings.append(time.perf_counter() - t0)
    per_iteration = sorted(timings)[len(timings) // 2] / probe
    return max(1, int(target_seconds / per_iteration))


def burn_batch(batch: list[int]) -> list[int]:
    """``burn`` over a list: what Dask and Ray anchors ship per task."""
    return [burn(i) for i in batch]


def square_batch(bounds: tuple[int, int]) -> Any:
    """``x*x`` for ``range(*bounds)``, computed per item in Python, returned as a NumPy array.

    What a Dask or Ray user ships per task: two ints in, one buffer out. (A list of Python
    ints is the slow way back: distributed serializes it element by element, and gathering
    1,000,000 of them in lists took 21 s here against 0.04 s as arrays.)
    """
    import numpy as np

    start, stop = bounds
    return np.array([x * x for x in range(start, stop)], dtype=np.int64)


# -- checkpoint cost: a CPU stage with a large output ---------------------------------------------


def features(seed: int, iterations: int, width: int) -> list[float]:
    """``iterations`` of pure-Python work, then ``width`` float64 values (``width`` × 8 bytes out)."""
    acc = burn(iterations + seed % 7)
    x = (seed * 2654435761 + acc) % 4294967296 / 4294967296.0
    out = []
    for _ in range(width):
        x = (x * 3.9999 * (1.0 - x)) or 0.5  # logistic map: cheap, deterministic, not compressible
        out.append(x)
    return out


def features_lean(seed: int, iterations: int, width: int) -> float:
    """The same computation, but only the sum leaves the stage (8 bytes out)."""
    return sum(features(seed, iterations, width))


# -- resume: a logged CPU map --------------------------------------------------------------------

_log_fd: tuple[int, int] | None = None  # (pid, fd)
CALL_LOG_ENV = "BENCH_CALL_LOG"


def log_call(item: int) -> None:
    """Append ``item`` to ``$BENCH_CALL_LOG`` with one unbuffered write (survives SIGKILL)."""
    global _log_fd
    path = os.environ.get(CALL_LOG_ENV)
    if not path:
        return
    pid = os.getpid()
    if _log_fd is None or _log_fd[0] != pid:
        _log_fd = (pid, os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    os.write(_log_fd[1], b"%d\n" % item)


def logged_burn(x: int, iterations: int) -> int:
    log_call(x)
    return burn(iterations) + x


# -- memory: JSON lines ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One parsed JSON line."""

    id: int
    user: str
    category: str
    value: float
    ts: str
    tags: list[str]
    text: str


def parse_event(line: str) -> Event:
    d = json.loads(line)
    return Event(d["id"], d["user"], d["category"], d["value"], d["ts"], d["tags"], d["text"])


_WORDS = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
]
CATEGORIES = 16


def generate_jsonl(path: str, target_bytes: int, seed: int = 1) -> int:
    """Write seeded JSON lines (about 500 bytes each) until ``target_bytes``; return the line count."""
    import random

    rng = random.Random(seed)
    words = _WORDS
    written = 0
    lines = 0
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", buffering=1 << 22) as f:
        while written < target_bytes:
            chunk = []
            for _ in range(2000):
                n = lines + len(chunk)
                text = " ".join(rng.choices(words, k=60))
                record = {
                    "id": n,
                    "user": f"user_{rng.randrange(100_000):05d}",
                    "category": f"cat_{rng.randrange(CATEGORIES):02d}",
                    "value": round(rng.random() * 1000, 3),
                    "ts": f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:{(n * 7) % 60:02d}",
                    "tags": rng.sample(words, 3),
                    "text": text,
                }
                chunk.append(json.dumps(record, separators=(",", ":")))
            block = "\n".join(chunk) + "\n"
            f.write(block)
            written += len(block)
            lines += len(chunk)
    os.replace(tmp, path)
    return lines


# -- ingest by hand ----------------------------------------------------------------------------


def describe_image(body: bytes, path: str) -> dict:
    """``stages.images.describe`` as a plain dict (what the hand-written ingest ships back)."""
    import dataclasses

    from stages.images import describe

    return dataclasses.asdict(describe(body, name=path))
