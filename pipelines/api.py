"""The Python entry points: ``pipelines.run`` and ``pipelines.resume``."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable
from typing import Any

import executors
from pipelines._engine.plan import RunOptions
from pipelines._engine.runner import Runner
from pipelines.define.loader import find_pipeline, load
from pipelines.define.model import Pipeline
from pipelines.errors import UsageError
from pipelines.observe.hooks import RunObserver
from pipelines.observe.result import RunResult
from pipelines.store import Store
from pipelines.store.past import find_run


def run(
    pipeline: Pipeline,
    params: Any = None,
    *,
    store: Store | str | None = None,
    executor: str | None = None,
    fresh: bool | Iterable[str] = False,
    observers: Iterable[RunObserver] = (),
    **options: Any,
) -> RunResult:
    """Run ``pipeline`` and return its result (the Python side of ``python -m pipelines run``).

    Args:
        pipeline: the pipeline to run.
        params: its parameters, as a dict (validated) or a params model instance.
        store: the store folder or URL (default ``./.pipelines`` or ``$PIPELINES_STORE``).
        executor: run every stage on this backend (a stage's own ``executor=`` still wins).
        fresh: recompute everything (``True``) or these stages and what depends on them.
        observers: progress hooks (``pipelines.RunObserver``).
        **options: other ``RunOptions`` fields (``address``, ``max_workers`` ...).

    Example:
        >>> from pydantic import BaseModel
        >>> class Params(BaseModel):
        ...     limit: int = 10
        >>> pipeline = Pipeline("numbers", params=Params)
        >>> @pipeline.source
        ... def numbers(params: Params):
        ...     yield from range(params.limit)
        >>> result = run(pipeline, {"limit": 100}, executor="threads", store=tmp_path)
        >>> result.status.value, result.table().num_rows
        ('ok', 100)
    """
    if executor is not None:
        executors.check_name(executor)
    fresh_opt = fresh if isinstance(fresh, bool) else frozenset(fresh)
    run_options = RunOptions(executor=executor, fresh=fresh_opt, **options)
    return Runner(pipeline, params=params, options=run_options, store=store, observers=observers).run()


def resume(
    run_id: str,
    *,
    store: Store | str | None = None,
    observers: Iterable[RunObserver] = (),
    pipeline: Pipeline | None = None,
    executor: str | None = None,
    **options: Any,
) -> RunResult:
    """Continue run ``run_id`` (or ``"latest"``, or a pipeline's name): reuse what is done, compute the rest.

    The run keeps its parameters and options unless given here (``executor=`` may move it to
    another backend). ``pipeline=`` gives the pipeline object (a run started from a script,
    whose module cannot be imported again) and scopes ``"latest"`` to it.
    """
    the_store = store if isinstance(store, Store) else Store(store)
    try:
        row = find_run(the_store, run_id, pipeline.name if pipeline is not None else None)
        if pipeline is None:
            pipeline = load(row["pipeline"], row["dags_dir"]) if row["dags_dir"] else _load_by_module(row)
        stored = json.loads(row["options"] or "{}")
        if executor is not None:
            executors.check_name(executor)
            if executor != stored.get("executor"):
                stored.pop("address", None)  # the old cluster's address means nothing to another backend
            stored["executor"] = executor
        stored.update({k: v for k, v in options.items() if v is not None})
        stored = {k: v for k, v in stored.items() if k in RunOptions.__dataclass_fields__}
        params = json.loads(row["params"]) if row["params"] else None
        runner = Runner(
            pipeline,
            params=params,
            options=RunOptions(**stored),
            store=the_store,
            observers=observers,
            resume=row["id"],
            dags_dir=row["dags_dir"],
        )
        return runner.run()
    finally:
        if not isinstance(store, Store):
            the_store.close()


def _load_by_module(row: Any) -> Pipeline:
    if row["module"] in ("__main__", "__mp_main__", None):
        raise UsageError(
            f"run {row['id']} of pipeline {row['pipeline']!r} was started from a script; resume it from Python with "
            f"pipelines.resume({row['id']!r}, pipeline=pipeline), or with python -m pipelines resume {row['id']} "
            f"--module MODULE, where MODULE (a module name or a .py file) defines the pipeline"
        )
    try:
        return find_pipeline(importlib.import_module(row["module"]), row["pipeline"])
    except ImportError as exc:
        raise UsageError(
            f"run {row['id']}: cannot import module {row['module']!r} of pipeline {row['pipeline']!r}: {exc}"
        ) from None
