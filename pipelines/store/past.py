"""Past runs, found and opened: ``latest`` (of a pipeline), a run id, a ``RunResult`` from the ledger.

The ledger says everything a finished run's result said: its stages' counts, its failed
items, where its parts are (in whichever run's folder they were written: a run that reused
everything has almost no files of its own). ``load`` rebuilds a ``RunResult`` from it, so
``.table(stage)`` and ``.to_pandas(stage)`` work for any past run.

Example:
    >>> result = pipelines.load("latest", store=".pipelines")          # doctest: +SKIP
    >>> result.to_pandas("count_primes").head()                         # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from typing import TYPE_CHECKING, Any

from pipelines.errors import UsageError
from pipelines.observe.result import RunResult, RunStatus, StageSummary

if TYPE_CHECKING:
    from pipelines.store import Store

LATEST = "latest"


def find_run(store: Store, ref: str, pipeline: str | None = None) -> sqlite3.Row:
    """The ledger row of run ``ref``: a run id, ``latest``, or a pipeline's name (its latest run).

    ``pipeline`` scopes ``latest`` to that pipeline (and checks that a run id belongs to it).

    Raises:
        UsageError: no such run, naming the store and the pipelines it has runs of.
    """
    row = None
    if ref == LATEST:
        row = store.ledger.latest_run(pipeline)
    else:
        row = store.ledger.run(ref)
        if row is None and pipeline is None:
            row = store.ledger.latest_run(ref)  # `resume NAME`: the latest run of pipeline NAME
    if row is not None and pipeline is not None and row["pipeline"] != pipeline:
        raise UsageError(f"run {row['id']} is a run of pipeline {row['pipeline']!r}, not {pipeline!r}")
    if row is None:
        names = [r["pipeline"] for r in store.ledger.query("SELECT DISTINCT pipeline FROM runs ORDER BY pipeline")]
        what = f"no run of pipeline {pipeline!r}" if pipeline and ref == LATEST else f"no run {ref!r}"
        known = f"; it has runs of: {', '.join(names)}" if names else "; it has no runs yet"
        raise UsageError(f"{what} in store {store.data_root}{known}")
    return row


def run_status(store: Store, row: Any) -> str:
    """The ledger's status, except that a 'running' run nobody holds has crashed."""
    if row["status"] != "running":
        return str(row["status"])
    lock = store.run_dir(row["id"]) / ".lock"
    try:
        fd = os.open(lock, os.O_RDONLY)  # flock needs no write access: a read-only store works
    except OSError:
        return "crashed"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "running"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return "crashed"
    finally:
        os.close(fd)


def run_items(store: Store, row: Any) -> int:
    """The items a run read from its sources: as recorded at its end, or for a run that never
    ended (killed, crashed, still running), the items its sources have checkpointed."""
    if row["ended"] is not None:
        return row["items"] or 0
    from pipelines.store.outputs import distinct_parts

    total = 0
    sources = [name for name, s in store.ledger.stages(row["id"]).items() if s["executor"] == "driver"]
    for name in sources:
        for batch in store.ledger.run_batches(row["id"], name):
            if batch["key"]:
                total += sum(len(p.done) for p in distinct_parts(store.ledger.parts(batch["key"])))
    return total


def load(
    run: str = LATEST, *, store: Store | str | os.PathLike[str] | None = None, pipeline: str | None = None
) -> RunResult:
    """A past run's ``RunResult``, rebuilt from the ledger: counts, failures, and its outputs.

    Args:
        run: a run id, ``"latest"``, or a pipeline's name (its latest run).
        store: the store folder or URL (default ``./.pipelines`` or ``$PIPELINES_STORE``).
        pipeline: scope ``"latest"`` to this pipeline.

    Raises:
        UsageError: no such run in the store.

    Example:
        >>> pipelines.load("latest", pipeline="process_pool").table("total")   # doctest: +SKIP
    """
    from pipelines.store import Store

    the_store = store if isinstance(store, Store) else Store(store, read_only=True)
    try:
        row = find_run(the_store, run, pipeline)
        return _result(the_store, row)
    finally:
        if not isinstance(store, Store):
            the_store.close()


def _result(store: Store, row: Any) -> RunResult:
    run_id = row["id"]
    stages = {}
    for s in store.ledger.stages(run_id).values():
        batches = store.ledger.run_batches(run_id, s["stage"])
        stages[s["stage"]] = StageSummary(
            stage=s["stage"],
            backend=s["executor"] or "",
            batches=s["batches"] or len(batches),
            reused_batches=s["reused"] or 0,
            computed_batches=s["computed"] or 0,
            items=s["items"] or 0,
            reused_items=_reused_items(store, run_id, batches, per_batch=(s["items"] or 0) == len(batches)),
            failed_items=s["failed"] or 0,
            rows=sum(b["rows"] or 0 for b in batches),
            seconds=s["seconds"] or 0.0,
            reason=s["reason"] or "",
        )
    leaves = tuple(name for name in stages if _has_output(store, run_id, name)) or tuple(list(stages)[-1:])
    seconds = (row["ended"] - row["started"]) if row["ended"] and row["started"] else 0.0
    return RunResult(
        run_id=run_id,
        pipeline=row["pipeline"],
        status=RunStatus(run_status(store, row)),
        stages=stages,
        failures=store.ledger.open_errors(run_id),
        seconds=seconds,
        leaves=leaves,
        store_root=store.data_root,
        resumed=(row["attempts"] or 1) > 1,
    )


def _reused_items(store: Store, run_id: str, batches: list[Any], *, per_batch: bool) -> int:
    """Items of the run's batches that other runs computed and this one did not (a source read
    again writes its own part under the same key: its items are not reused).

    A batch or reduce stage counts one item per batch (``per_batch``: its items are as many
    as its batches; a map whose batches hold one item each counts the same either way).
    """
    from pipelines._engine.idset import IdSet

    total = 0
    for b in batches:
        if not b["key"]:
            continue
        theirs, ours = IdSet(), IdSet()
        for part in store.ledger.query("SELECT done, run_id FROM parts WHERE key=?", (b["key"],)):
            if part["run_id"] == run_id:
                ours = ours | IdSet.from_json(part["done"])
            else:
                theirs = theirs | IdSet.from_json(part["done"])
        reused = len(theirs) - len(theirs & ours)
        total += min(reused, 1) if per_batch else reused
    return total


def _has_output(store: Store, run_id: str, stage: str) -> bool:
    path = store.run_data(run_id, "outputs", f"{stage}.parquet")
    return "://" not in path and os.path.exists(path)
