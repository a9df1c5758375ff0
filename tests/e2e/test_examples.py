"""The examples in dags/ end to end: each gives exactly what a plain serial loop gives.

Every module in dags/ but ingest (tested in ``test_ingest_python.py``) maps one hand-written
parallel pattern to a pipeline. Its docstring shows the hand-written code as its first
literal block (after the first ``::``) and the declaration that replaces it as its second.
Here each pipeline runs through ``pipelines.run`` on a fresh store and its tables are
compared, row for row, with the same job done serially in plain Python; the hand-written
code is run too, in a fresh interpreter, and must print the same answer; the declaration
shown must be the one in the code. A new example without an entry in ``EXAMPLES`` fails
``test_every_example_is_tested``.

The Ray example runs on the session's Ray (``ray_session``), so only inside a network
namespace that has nothing but loopback (``python tests/loopback_only.py ...``); elsewhere
it skips.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import pipelines
from pipelines import RunStatus
from pipelines.define import loader

from ..conftest import ROOT, cli
from ..executors.helpers import RAY_ENV, skip_unless_only_loopback

DAGS = ROOT / "dags"
DATA = ROOT / "data"
TESTED_ELSEWHERE = {"ingest"}  # tests/e2e/test_ingest_python.py

Rows = dict[str, list[dict[str, Any]]]  # stage -> its rows, in order


# -- the same jobs, done serially in plain Python ----------------------------------------------------
def primes_below(n: int) -> int:
    """A sieve: another algorithm than the example's trial division."""
    sieve = bytearray([1]) * n
    sieve[:2] = b"\0\0"
    for k in range(2, int(n**0.5) + 1):
        if sieve[k]:
            sieve[k * k :: k] = bytes(len(range(k * k, n, k)))
    return sum(sieve)


def process_pool() -> Rows:
    counts = [{"n": n, "primes": primes_below(n)} for n in range(2_000, 60_001, 2_000)]
    return {"count_primes": counts, "total": [{"limits": 30, "primes": sum(c["primes"] for c in counts)}]}


def image_files() -> list[Path]:
    return sorted(path for path in (DATA / "images").iterdir() if path.is_file())


def thread_pool() -> Rows:
    checksums = [
        {"name": path.name, "bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        for path in image_files()
    ]
    return {"checksum": checksums, "total": [{"files": len(checksums), "bytes": sum(c["bytes"] for c in checksums)}]}


def shared_state() -> Rows:
    files: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for path in DATA.rglob("*"):
        if path.is_file():
            files[path.suffix] += 1
            sizes[path.suffix] += path.stat().st_size
    return {"by_suffix": [{"suffix": s, "files": files[s], "bytes": sizes[s]} for s in sorted(files)]}


def joblib_parallel() -> Rows:
    pipeline = loader.load("joblib_parallel", DAGS)
    inside = pipeline["inside"].fn  # numpy's floats: the stage's own function, in a plain loop
    params = pipeline.params_model()
    rows = [{"row": r.row, "inside": r.inside} for r in (inside(row, params) for row in range(params.size))]
    points = sum(r["inside"] for r in rows)
    return {"inside": rows, "area": [{"inside": points, "area": points * (3.0 / (params.size - 1)) ** 2}]}


CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg"}


def async_gather() -> Rows:
    fetched = [
        {"name": p.name, "content_type": CONTENT_TYPES[p.suffix], "bytes": p.stat().st_size} for p in image_files()
    ]
    types = sorted({f["content_type"] for f in fetched})
    return {
        "fetch": fetched,
        "by_type": [
            {
                "content_type": t,
                "files": sum(f["content_type"] == t for f in fetched),
                "bytes": sum(f["bytes"] for f in fetched if f["content_type"] == t),
            }
            for t in types
        ],
    }


def ray_remote() -> Rows:
    counts = []
    for seed in range(16):
        rng = random.Random(seed)
        inside = sum(rng.random() ** 2 + rng.random() ** 2 < 1.0 for _ in range(100_000))
        counts.append({"seed": seed, "inside": inside})
    inside = sum(c["inside"] for c in counts)
    return {"count_inside": counts, "estimate": [{"points": 1_600_000, "inside": inside, "pi": 4 * inside / 1_600_000}]}


def json_files() -> Rows:
    """From the original data/cars.json, so the bundled files must hold every record."""
    cars = json.loads((DATA / "cars.json").read_bytes())
    origins = sorted({car["Origin"] for car in cars})
    return {
        "by_origin": [
            {
                "origin": o,
                "cars": sum(car["Origin"] == o for car in cars),
                "weight_lbs": sum(car["Weight_in_lbs"] for car in cars if car["Origin"] == o),
                "horsepower": sum(car["Horsepower"] or 0 for car in cars if car["Origin"] == o),
                "with_horsepower": sum(car["Horsepower"] is not None for car in cars if car["Origin"] == o),
            }
            for o in origins
        ]
    }


@dataclass(frozen=True)
class Example:
    """What an example must give: its tables, the backend of its parallel stage, and what
    its docstring's hand-written code prints (from the same expected tables)."""

    expected: Callable[[], Rows]
    backends: dict[str, str]
    printed: Callable[[Rows], Any]
    needs: tuple[str, ...] = ()  # optional packages
    marks: tuple[Any, ...] = field(default=())


def by_key(rows: list[dict[str, Any]], key: str, *values: str) -> list[tuple[Any, Any]]:
    return [(r[key], tuple(r[v] for v in values) if len(values) > 1 else r[values[0]]) for r in rows]


EXAMPLES: dict[str, Example] = {
    "process_pool": Example(process_pool, {"count_primes": "processes"}, lambda e: e["total"][0]["primes"]),
    "thread_pool": Example(thread_pool, {"checksum": "threads"}, lambda e: [c["sha256"] for c in e["checksum"]]),
    "shared_state": Example(
        shared_state, {"measure": "threads"}, lambda e: by_key(e["by_suffix"], "suffix", "files", "bytes")
    ),
    "joblib_parallel": Example(
        joblib_parallel, {"inside": "joblib"}, lambda e: e["area"][0]["inside"], needs=("joblib",)
    ),
    "async_gather": Example(
        async_gather, {"fetch": "asyncio"}, lambda e: by_key(e["by_type"], "content_type", "files", "bytes")
    ),
    "ray_remote": Example(
        ray_remote,
        {"count_inside": "ray"},
        lambda e: e["estimate"][0]["pi"],
        needs=("ray",),
        marks=(pytest.mark.cluster, pytest.mark.ray, pytest.mark.slow),
    ),  # a ray.init: 3-5 s
    "json_files": Example(json_files, {"parse": "processes"}, lambda e: by_key(e["by_origin"], "origin", "weight_lbs")),
}
NAMES = [pytest.param(name, marks=example.marks) for name, example in EXAMPLES.items()]


def docstring_blocks(name: str) -> list[str]:
    """The literal blocks (after ``::``) of a dags module's docstring, dedented."""
    doc = ast.get_docstring(ast.parse((DAGS / f"{name}.py").read_text()))
    assert doc, f"dags/{name}.py has no docstring"
    blocks: list[str] = []
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.endswith("::"):
            body = []
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith(" "):
                    break
                body.append(following)
            blocks.append(textwrap.dedent("\n".join(body)).strip("\n"))
    return blocks


# -- tests ---------------------------------------------------------------------------------------
def test_every_example_is_tested() -> None:
    modules = {path.stem for path in DAGS.glob("*.py") if not path.name.startswith("_")}
    assert modules - TESTED_ELSEWHERE == set(EXAMPLES)


@pytest.mark.parametrize("name", NAMES)
def test_example_gives_what_the_serial_loop_gives(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    example = EXAMPLES[name]
    for package in example.needs:
        pytest.importorskip(package)
    if "ray" in example.backends.values():
        request.getfixturevalue("ray_session")
    pipeline = loader.load(name, DAGS)
    assert pipeline.name == name

    result = pipelines.run(pipeline, store=tmp_path)

    assert result.status is RunStatus.OK, result.error
    assert {stage: result.stages[stage].backend for stage in example.backends} == example.backends
    for stage, rows in example.expected().items():
        assert result.table(stage).to_pylist() == rows, f"stage {stage!r} of {name}"


@pytest.mark.parametrize("name", NAMES)
def test_hand_written_code_in_the_docstring_prints_the_same(name: str, tmp_path: Path) -> None:
    example = EXAMPLES[name]
    for package in example.needs:
        pytest.importorskip(package)
    env = {**os.environ}
    if "ray" in example.backends.values():
        skip_unless_only_loopback()
        ray_tmp = tempfile.mkdtemp(prefix="ray-doc-")  # short: Ray's socket paths must fit in 107 bytes
        env.update(RAY_ENV, RAY_TMPDIR=ray_tmp)  # a Ray of its own, never one found in /tmp/ray
    script = tmp_path / "hand_written.py"
    script.write_text(docstring_blocks(name)[0])
    try:
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        if "ray" in example.backends.values():
            shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    assert ast.literal_eval(proc.stdout.splitlines()[-1]) == example.printed(example.expected())


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_docstring_shows_the_declaration_in_the_code_and_how_to_run(name: str) -> None:
    source = (DAGS / f"{name}.py").read_text()
    code_lines = {line.strip() for line in source.split('"""', 2)[2].splitlines()}
    blocks = docstring_blocks(name)
    assert len(blocks) >= 2, f"dags/{name}.py: the hand-written code, then the declaration, as literal blocks"
    for line in blocks[1].splitlines():
        assert line.removesuffix(" ...") in code_lines, f"dags/{name}.py shows {line!r}, which its code lacks"
    assert f"python -m pipelines run {name}" in source.split('"""', 2)[1]


def test_list_shows_every_example_with_its_summary() -> None:
    listed = {
        line.split(None, 1)[0]: line.split(None, 1)[1]
        for line in cli("list", check=0).stdout.splitlines()
        if line.strip()
    }
    for name in EXAMPLES:
        summary = ast.get_docstring(ast.parse((DAGS / f"{name}.py").read_text())).splitlines()[0]
        assert listed.get(name) == summary


def test_cli_runs_json_files_and_writes_its_output(tmp_path: Path) -> None:
    proc = cli("run", "json_files", "--store", str(tmp_path), "--quiet", check=0)
    assert "by_origin" in proc.stdout
    (output,) = (tmp_path / "runs").glob("*/outputs/by_origin.parquet")
    assert pq.read_table(output).to_pylist() == json_files()["by_origin"]


def copy_json_files(folder: Path) -> Path:
    shutil.copytree(DATA / "json_files", folder, ignore=shutil.ignore_patterns("*.py"))
    return folder


def test_json_files_rerun_reuses_until_a_file_changes(tmp_path: Path) -> None:
    pipeline = loader.load("json_files", DAGS)
    params = {"folder": str(copy_json_files(tmp_path / "json"))}
    first = pipelines.run(pipeline, params, store=tmp_path / "store", executor="threads")
    again = pipelines.run(pipeline, params, store=tmp_path / "store", executor="threads")
    assert again.stages["parse"].reused_items == again.stages["parse"].items == 51
    assert again.table("by_origin").equals(first.table("by_origin"))

    edited = tmp_path / "json" / "cars-000.json"
    cars = json.loads(edited.read_bytes())
    edited.write_text(json.dumps(cars[1:]))  # one car fewer
    changed = pipelines.run(pipeline, params, store=tmp_path / "store", executor="threads")
    assert changed.stages["parse"].reused_items == 50 and changed.stages["parse"].computed_batches == 1
    assert sum(changed.table("by_origin").column("cars").to_pylist()) == 405


def test_json_files_names_the_file_record_and_field_of_a_bad_record(tmp_path: Path) -> None:
    folder = copy_json_files(tmp_path / "json")
    bad = folder / "cars-003.json"
    cars = json.loads(bad.read_bytes())
    cars[2]["Weight_in_lbs"] = "heavy"
    bad.write_text(json.dumps(cars))
    result = pipelines.run(
        loader.load("json_files", DAGS), {"folder": str(folder)}, store=tmp_path / "store", executor="threads"
    )
    assert result.status is RunStatus.FAILED
    (failure,) = result.failures
    assert failure.stage == "parse"
    assert failure.message.startswith("cars-003.json, record 2 at byte ")
    assert "field 'Weight_in_lbs' of Car: Input should be a valid integer" in failure.message
