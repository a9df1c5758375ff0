"""The driver: one scheduling loop that streams batches through the DAG.

Model (cf. dask's ``local.py``): the source thread cuts items into batches and checkpoints
them; each finished task reports which item ids of which batch it computed; those ids
become *available* to the stage's consumers at once, so a downstream map starts on batch 0
while its upstream still works on batch 1 — streaming at the level of single tasks.
Consumers that renumber rows (flat-maps, batch and reduce stages) wait for whole batches,
reduce stages for whole inputs.

Each turn of the loop:
    1. schedule: downstream stages first (drain before filling), then sources; a stage
       submits tasks while it and its executor have room (about two tasks per worker);
       the source reads ahead only while few batches are open (backpressure);
    2. wait for the first future to finish (any mix of backends);
    3. record it in the ledger and offer its ids downstream.

Keys make reuse exact: a batch's key is a digest of the stage's fingerprint and the lineage
of its inputs; whatever the ledger already holds under that key (from an earlier run, or
an earlier attempt of this run) is reused item by item, and only the rest is computed.
A failure under ``on_error="fail"`` stops scheduling; running tasks finish and are kept.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import executors as executor_registry
from executors import WorkerLostError

from . import fingerprint as fp
from . import resources
from .batching import TaskSizer
from .errors import PipelinesError, StageFailed, UsageError
from .hooks import Observers, RunObserver, StageStats
from .idset import IdSet
from .loader import handle_for
from .model import Pipeline, Stage
from .outputs import distinct_parts
from .plan import Plan, RunOptions, plan
from .result import RunResult, RunStatus, StageSummary
from .source import SourceBatch, SourceReader
from .state import BatchState, StageState
from .store import Store
from .store import arrow as batch_files
from .store.ledger import ItemError, Part
from .task import BatchTask, InputPart, InputSpec, TaskResult

MAX_OPEN_SOURCE_BATCHES = 6
WATCHDOG_GRACE_SECONDS = 2.0
INTERRUPT_GRACE_SECONDS = 5.0
PROGRESS_INTERVAL = 0.1


@dataclass(slots=True)
class _Running:
    stage: str
    batch: int
    ids: IdSet
    slot: str
    solo: bool  # ran alone on its executor: a worker death is its own
    started: float = 0.0
    deadline: float | None = None  # past it, the task's worker is killed (process backends)


class Runner:
    """Runs one pipeline once (a new run, or a resume of an earlier one).

    Example:
        >>> result = Runner(pipeline, params={"limit": 10}).run()       # doctest: +SKIP
        >>> result.table("by_category").to_pandas()                     # doctest: +SKIP
    """

    def __init__(self, pipeline: Pipeline, *, params: Any = None, options: RunOptions = RunOptions(),
                 store: Store | str | None = None, observers: Iterable[RunObserver] = (),
                 resume: str | None = None, dags_dir: str | None = None) -> None:
        self.pipeline = pipeline.validate()
        self.params = pipeline.parse_params(params)
        self.params_json = self.params.model_dump_json() if self.params is not None else None
        self.options = options
        self._own_store = not isinstance(store, Store)
        self.store = store if isinstance(store, Store) else Store(store)
        self.observer = Observers(list(observers))
        self.resumed = resume is not None
        self.run_id = resume or Store.new_run_id()
        self.dags_dir = dags_dir
        self.plan: Plan = plan(pipeline, options)
        self.order = list(self.plan.order)
        self.stages = pipeline.stages
        self.consumers = {n: [c for c in self.order if n in self.stages[c].inputs] for n in self.order}
        self.side_users = {n: [c for c in self.order if n in self.stages[c].side] for n in self.order}
        self.fresh = self._expand_fresh(options.fresh)
        self.states: dict[str, StageState] = {}
        self.fingerprints: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self._executors: dict[str, Any] = {}
        self._slot_in_flight: dict[str, int] = {}
        self._slot_cap: dict[str, int] = {}
        self._running: dict[Future[Any], _Running] = {}
        self._sources: dict[str, SourceReader] = {}
        self._source_pool: dict[str, ThreadPoolExecutor] = {}
        self._source_futures: dict[Future[Any], str] = {}
        self._source_open: dict[str, int] = {}
        self._stream_of: dict[str, list[str]] = {}
        self._origin = self._origins()
        self._source_offsets: dict[str, dict[int, int]] = {}
        self._source_sizes: dict[str, dict[int, int]] = {}
        self.failure: StageFailed | None = None
        self.stopping = False
        self.interrupted = False
        self._hard_stop = False  # a second Ctrl-C: stop waiting for anything
        self._overdue: set[Future[Any]] = set()  # past their deadline: their worker was killed
        self._collateral: set[Future[Any]] = set()  # running beside them when it was
        self._suspects_on: dict[str, int] = {}  # slot -> suspect groups waiting to run alone
        self._solo_running: dict[str, int] = {}
        self._last_progress = 0.0
        self._changed = False
        self._handle: Any = None  # made when the first out-of-process executor starts

    # == entry ==================================================================================
    def run(self) -> RunResult:
        started = time.time()
        self.store.lock(self.run_id)
        try:
            self._open_run()
            self.observer.run_started(self.run_id, self.pipeline.name, self.plan, resumed=self.resumed)
            with lifespan(self.pipeline, self.params):
                self._start_executors()
                try:
                    self._loop()
                except KeyboardInterrupt:
                    self._interrupt()
                finally:
                    if not self._hard_stop:
                        resources.close_all()  # while the executors' loops still run
                    self._shutdown_executors(cancel=self.interrupted or self.failure is not None)
            return self._close(started)
        finally:
            self._shutdown_executors(cancel=self.interrupted or self.failure is not None)
            for pool in self._source_pool.values():
                pool.shutdown(wait=False, cancel_futures=True)
            self.store.unlock(self.run_id)
            if self._own_store:
                self.store.close()

    # == setup ==================================================================================
    def _expand_fresh(self, fresh: bool | frozenset[str]) -> set[str]:
        if fresh is True:
            return set(self.order)
        if not fresh:
            return set()
        chosen = set(fresh)
        for name in chosen:
            self.pipeline[name]  # raises with "did you mean" for unknown names
        changed = True
        while changed:  # what depends on a fresh stage is recomputed too
            changed = False
            for name in self.order:
                if name not in chosen and any(u in chosen for u in self.stages[name].upstream):
                    chosen.add(name)
                    changed = True
        return chosen

    def _open_run(self) -> None:
        ledger = self.store.ledger
        pinned: dict[str, Any] = {}
        if self.resumed:
            if ledger.run(self.run_id) is None:
                raise UsageError(f"no run {self.run_id!r} in store {self.store.root}")
            pinned = ledger.stages(self.run_id)
            ledger.reopen_run(self.run_id)
        else:
            ledger.create_run(self.run_id, pipeline=self.pipeline.name, module=self.pipeline.module,
                              dags_dir=self.dags_dir, params=self.params_json, options=self.options.describe())
        for name in self.order:
            stage = self.stages[name]
            sp = self.plan.stages[name]
            parts = fp.stage_parts(stage, self.params_json)
            current = fp.stage_fingerprint(parts)
            old = pinned.get(name)
            if old is not None and old["fingerprint"] and old["fingerprint"] != current:
                self.observer.message(
                    f"stage {name!r} changed since this run started; the resume keeps its finished items "
                    f"(use `run --fresh {name}` to recompute them all)", level="warning")
                current = old["fingerprint"]
            self.fingerprints[name] = current
            self.reasons[name] = self._reason(name, parts)
            workers = self._workers_hint(sp.slot)
            self.states[name] = StageState(name, TaskSizer(fixed=sp.task_size, target=sp.target_seconds,
                                                           start=sp.start_size, workers=workers))
            ledger.save_stage(self.run_id, name, fingerprint=current, code_fp=parts["code"],
                              config_fp=parts["config"], params_fp=parts["params"], executor=sp.backend,
                              status="running")
        for name in self.order:
            if self.stages[name].granularity == "source":
                self._stream_of[name] = self._stream_stages(name)
                self._source_open[name] = 0
                self._open_source(name, pinned.get(name))
        for name in self.order:  # stages with no inputs left to wait for
            self._check_stage_final(name)

    def _origins(self) -> dict[str, str]:
        """For item-wise stages whose input ids are source positions: that source."""
        def origin(name: str) -> str | None:
            stage = self.stages[name]
            if stage.granularity == "source":
                return name
            if stage.granularity == "item":
                return origin(stage.inputs[0])
            return None

        out = {}
        for name in self.order:
            stage = self.stages[name]
            if stage.itemwise and (src := origin(stage.inputs[0])) is not None:
                out[name] = src
        return out

    def _note_source_batch(self, name: str, k: int, rows: int) -> None:
        """Remember batch sizes; a batch's offset is known once every earlier size is."""
        sizes = self._source_sizes.setdefault(name, {})
        sizes[k] = rows
        offsets = self._source_offsets.setdefault(name, {0: 0})
        j = max(offsets)
        while j in sizes:
            offsets[j + 1] = offsets[j] + sizes[j]
            j += 1

    def _reason(self, name: str, parts: dict[str, str]) -> str:
        if name in self.fresh:
            return "--fresh"
        prev = self.store.ledger.previous_stage(self.pipeline.name, name, self.run_id)
        if prev is None:
            return "new"
        for part, label in (("code", "code changed"), ("config", "definition changed"), ("params", "params changed")):
            if prev[f"{part}_fp"] != parts[part]:
                return label
        return ""

    def _workers_hint(self, slot: str | None) -> int:
        if slot is None:
            return 1
        spec = self.plan.executors[slot]
        return max(1, int(spec.options.get("max_workers") or os.cpu_count() or 1)) if spec.backend != "asyncio" else 1

    def _stream_stages(self, source: str) -> list[str]:
        """Stages whose batch k follows the source's batch k (all but reduce stages and beyond)."""
        out, frontier = [source], [source]
        while frontier:
            name = frontier.pop()
            for c in self.consumers[name]:
                if self.stages[c].granularity != "all" and c not in out:
                    out.append(c)
                    frontier.append(c)
        return out

    # == sources ================================================================================
    def _open_source(self, name: str, pinned: Any) -> None:
        stage = self.stages[name]
        if self.resumed and pinned is not None and pinned["source_complete"] and name not in self.fresh:
            if self._reload_source(name):
                return
            self.observer.message(f"source {name!r}: stored batches are damaged; reading the source again",
                                  level="warning")
        self._sources[name] = SourceReader(stage, self.params, lambda k, key, n=name: self._source_path(n, k, key),
                                           loop=self._source_loop(stage))
        self._source_pool[name] = ThreadPoolExecutor(1, thread_name_prefix=f"pipelines-source-{name}")

    def _source_path(self, name: str, batch: int, key: str) -> str:
        return self.store.part_path(self.run_id, name, batch, key, 0)

    def _source_loop(self, stage: Stage) -> Any:
        if not stage.is_async:
            return None
        return self._executor("asyncio").loop if "asyncio" in self.plan.executors else None

    def _reload_source(self, name: str) -> bool:
        """Put a finished source's stored batches back, verified; ``False`` if any is damaged."""
        rows = self.store.ledger.run_batches(self.run_id, name)
        loaded: list[tuple[int, str, list[Part]]] = []
        for row in rows:
            parts = self.store.ledger.parts(row["key"])
            if not parts or any(batch_files.verify(p.info) for p in parts):
                return False
            loaded.append((row["batch"], row["key"], parts))
        st = self.states[name]
        for batch, key, parts in loaded:
            b = st.batch(batch)
            b.key, b.parts = key, parts
            b.done = b.available = parts[0].done
            b.rows = sum(p.rows for p in parts)
            b.upstream_final = True
            b.reused_parts = len(parts)
            self._note_source_batch(name, batch, b.rows)
            st.items_reused += len(b.done)
            self._source_open[name] += 1
            self._publish(name, batch, b.done)
            self._finalize_batch(name, batch)
        st.upstream_final = True
        return True

    def _schedule_source(self, name: str) -> None:
        reader = self._sources.get(name)
        if reader is None or reader.exhausted or self.stopping:
            return
        if any(s == name for s in self._source_futures.values()):
            return
        if self._source_open[name] >= MAX_OPEN_SOURCE_BATCHES:
            return
        future = self._source_pool[name].submit(reader.read_next)
        self._source_futures[future] = name

    def _source_done(self, future: Future[Any], name: str) -> None:
        st = self.states[name]
        try:
            batch: SourceBatch | None = future.result()
        except StageFailed as exc:
            self._fail(exc)
            st.upstream_final = True
            return
        except Exception as exc:  # noqa: BLE001 - writing the batch failed (disk full...)
            self._fail(StageFailed(name, str(exc), error_type=type(exc).__name__))
            st.upstream_final = True
            return
        if batch is None:
            st.upstream_final = True
            self._check_stage_final(name)
            return
        b = st.batch(batch.batch)
        b.key = batch.key
        ids = IdSet.span(0, batch.file.rows)
        part = Part(batch.key, batch.file.path, ids, batch.file.rows, batch.file.bytes, batch.file.checksum, 0)
        self.store.ledger.record_part(run_id=self.run_id, stage=name, batch=batch.batch, key=batch.key,
                                      fingerprint=self.fingerprints[name], info=batch.file, done=ids)
        b.parts, b.available, b.done, b.rows, b.upstream_final = [part], ids, ids, batch.file.rows, True
        b.computed_parts = 1
        self._note_source_batch(name, batch.batch, batch.file.rows)
        st.items_done += len(ids)
        self._source_open[name] += 1
        self._publish(name, batch.batch, ids)
        self._finalize_batch(name, batch.batch)

    # == keys and reuse =========================================================================
    def _content(self, name: str, k: int) -> str:
        b = self.states[name].batches[k]
        return fp.digest(b.key, b.done.to_json())

    def _lineage(self, name: str, k: int) -> str | None:
        """What identifies producer ``name``'s batch ``k`` for an item-wise consumer."""
        b = self.states[name].batches.get(k)
        if b is None or b.key is None:
            return None
        if self.stages[name].keeps_item_ids:
            return b.key
        return self._content(name, k) if b.final else None

    def _side_lineage(self, stage: Stage) -> list[str] | None:
        out: list[str] = []
        for side in stage.side:
            st = self.states[side]
            if not st.final:
                return None
            out.extend(self._content(side, k) for k in sorted(st.batches))
        return out

    def _ensure_key(self, name: str, k: int) -> bool:
        """Give batch ``k`` of stage ``name`` its key, and reuse what the ledger has under it."""
        stage = self.stages[name]
        b = self.states[name].batch(k)
        if b.key is not None:
            return True
        side = self._side_lineage(stage)
        if side is None:
            return False
        if stage.granularity == "all":
            ups = []
            for u in stage.inputs:
                ups.extend(self._content(u, j) for j in sorted(self.states[u].batches))
        elif stage.granularity == "batch":
            ups = [self._content(stage.inputs[0], k)]
        else:
            lineage = self._lineage(stage.inputs[0], k)
            if lineage is None:
                return False
            ups = [lineage]
        b.key = fp.batch_key(self.fingerprints[name], [*ups, *side])
        self._reuse(name, k, b)
        return True

    def _reuse(self, name: str, k: int, b: BatchState) -> None:
        assert b.key is not None
        ledger = self.store.ledger
        if name in self.fresh:
            ledger.forget_object(b.key)
            return
        parts = []
        for part in distinct_parts(ledger.parts(b.key)):
            problem = batch_files.verify(part.info)
            if problem:
                self.observer.message(f"stage {name!r} batch {k}: checkpoint {part.path} is {problem}; "
                                      f"recomputing it", level="warning")
                ledger.forget_part(part.key, part.path)
                continue
            parts.append(part)
        if not parts:
            return
        b.parts = parts
        b.reused_parts = len(parts)
        b.next_part = 1 + max((_part_number(p.path) for p in parts), default=-1)
        done = IdSet()
        for part in parts:
            done = done | part.done
        b.done = done
        b.rows = sum(p.rows for p in parts)
        st = self.states[name]
        st.items_reused += len(done)
        if self.stages[name].itemwise:
            self._publish(name, k, done)

    # == streaming ids downstream ==============================================================
    def _publish(self, name: str, k: int, ids: IdSet) -> None:
        """Offer newly done ids of ``name``'s batch ``k`` to consumers that take them one by one."""
        if not ids or not self.stages[name].keeps_item_ids:
            return
        for c in self.consumers[name]:
            stage = self.stages[c]
            if stage.itemwise:
                cb = self.states[c].batch(k)
                cb.available = cb.available | ids

    def _finalize_batch(self, name: str, k: int) -> None:
        st = self.states[name]
        b = st.batch(k)
        if b.final or not b.settled():
            return
        stage = self.stages[name]
        if not stage.itemwise and stage.granularity != "source" and not (b.done or b.failed or b.parts):
            return  # a table stage that has not run yet
        b.final = True
        self._changed = True
        st.rows += b.rows
        if b.key is not None:
            status = "failed" if b.failed and not b.done else ("partial" if b.failed else "done")
            self.store.ledger.set_batch(self.run_id, name, k, b.key, status, b.rows, len(b.failed))
        for c in self.consumers[name]:
            cstage = self.stages[c]
            if cstage.granularity == "all":
                continue
            cb = self.states[c].batch(k)
            if cstage.itemwise and not stage.keeps_item_ids:
                cb.available = cb.available | IdSet.span(0, b.rows)
            if cstage.granularity == "batch":
                cb.ready = True
            cb.upstream_final = True
        for source, stream in self._stream_of.items():
            if name in stream and all(self.states[s].batches.get(k) is not None and self.states[s].batches[k].final
                                      for s in stream):
                self._source_open[source] -= 1
        self._check_stage_final(name)

    def _check_stage_final(self, name: str) -> None:
        st = self.states[name]
        stage = self.stages[name]
        if st.final:
            return
        if stage.granularity != "source":
            st.upstream_final = all(self.states[u].final for u in stage.inputs)
        if not st.upstream_final:
            return
        if stage.granularity == "all":
            b = st.batches.get(0)
            if b is None:
                b = st.batch(0)
                b.ready = True
                b.upstream_final = True
            if not b.final:
                return
        elif any(not b.final for b in st.batches.values()):
            return
        elif stage.granularity != "source":
            inputs_batches = set().union(*(self.states[u].batches for u in stage.inputs)) if stage.inputs else set()
            if any(k not in st.batches or not st.batches[k].final for k in inputs_batches):
                return
        st.final = True
        st.ended = time.time()
        self._save_stage(name, ("failed" if stage.on_error == "fail" else "partial") if st.items_failed else "done")
        for c in self.consumers[name] + self.side_users[name]:
            self._check_stage_final(c)

    # == scheduling =============================================================================
    def _schedule(self) -> None:
        """Passes over the stages until one changes nothing (reuse can finish stages at once)."""
        for _ in range(len(self.order) + 2):
            self._changed = False
            self._schedule_pass()
            if not self._changed:
                return

    def _schedule_pass(self) -> None:
        for name in reversed(self.order):
            stage = self.stages[name]
            if stage.granularity == "source":
                self._schedule_source(name)
                continue
            st = self.states[name]
            if st.final or self.stopping:
                continue
            if stage.itemwise:
                self._schedule_items(name)
            else:
                self._schedule_table(name)

    def _room(self, name: str, items: int = 0) -> bool:
        sp = self.plan.stages[name]
        st = self.states[name]
        if st.in_flight >= sp.max_tasks:
            return False
        if sp.max_items is not None and st.items_in_flight and st.items_in_flight + items > sp.max_items:
            return False
        slot = sp.slot
        assert slot is not None
        return self._slot_in_flight.get(slot, 0) < self._slot_cap.get(slot, self.plan.executors[slot].max_tasks)

    def _schedule_items(self, name: str) -> None:
        st = self.states[name]
        for k in sorted(st.batches):
            b = st.batches[k]
            if b.final or not self._ensure_key(name, k):
                continue
            if self._quarantined(name):
                if b.suspects and self._slot_idle(name):
                    self._submit_items(name, k, self._pop_suspect(name, b), solo=True)
                continue
            while True:
                pending = b.pending
                if not pending:
                    break
                size = st.sizer.size(len(pending), final=b.upstream_final)
                if len(pending) < size and not b.upstream_final and st.in_flight:
                    break  # wait for more ids rather than send a tiny task
                if not self._room(name, min(size, len(pending))):
                    return
                ids, _ = pending.take(size)
                self._submit_items(name, k, ids, solo=False)
            self._finalize_batch(name, k)

    def _schedule_table(self, name: str) -> None:
        stage = self.stages[name]
        st = self.states[name]
        if stage.granularity == "all":
            st.upstream_final = all(self.states[u].final for u in stage.inputs)
            if not st.upstream_final:
                return
            b = st.batch(0)
            b.ready = b.upstream_final = True
        for k in sorted(st.batches):
            b = st.batches[k]
            if b.final or not b.ready or b.in_flight:
                continue
            if not self._ensure_key(name, k):
                continue
            if b.done or b.parts:  # reused
                self._finalize_batch(name, k)
                continue
            if self._quarantined(name):
                if b.suspects and self._slot_idle(name):
                    self._submit(name, k, self._pop_suspect(name, b), self._table_inputs(name, k), solo=True)
                continue
            if b.suspects or b.failed or not self._room(name):
                continue
            self._submit(name, k, IdSet.span(0, 1), self._table_inputs(name, k), solo=False)

    # -- quarantine: after a worker died, suspects run one at a time ------------------------------
    def _quarantined(self, name: str) -> bool:
        slot = self.plan.stages[name].slot
        return bool(self._suspects_on.get(slot) or self._solo_running.get(slot))

    def _slot_idle(self, name: str) -> bool:
        return not self._slot_in_flight.get(self.plan.stages[name].slot or "", 0)

    def _pop_suspect(self, name: str, b: BatchState) -> IdSet:
        self._suspects_on[self.plan.stages[name].slot or ""] -= 1
        return b.suspects.pop(0)

    def _add_suspects(self, name: str, b: BatchState, *groups: IdSet) -> None:
        b.suspects.extend(groups)
        slot = self.plan.stages[name].slot or ""
        self._suspects_on[slot] = self._suspects_on.get(slot, 0) + len(groups)

    def _table_inputs(self, name: str, k: int) -> tuple[InputSpec, ...]:
        stage = self.stages[name]
        if stage.granularity == "all":
            specs = []
            for u in stage.inputs:
                parts = [p for j in sorted(self.states[u].batches) for p in distinct_parts(self.states[u].batches[j].parts)]
                specs.append(InputSpec(u, tuple(InputPart(p.path) for p in parts), False))
            return tuple(specs)
        u = stage.inputs[0]
        parts = distinct_parts(self.states[u].batches[k].parts)
        return (InputSpec(u, tuple(InputPart(p.path) for p in parts), self.stages[u].keeps_item_ids),)

    def _submit_items(self, name: str, k: int, ids: IdSet, *, solo: bool) -> None:
        stage = self.stages[name]
        u = stage.inputs[0]
        ub = self.states[u].batches[k]
        parts = distinct_parts(ub.parts)
        if self.stages[u].keeps_item_ids:
            parts = [p for p in parts if p.done & ids]
        spec = InputSpec(u, tuple(InputPart(p.path) for p in parts), self.stages[u].keeps_item_ids, ids)
        self._submit(name, k, ids, (spec,), solo=solo)

    def _submit(self, name: str, k: int, ids: IdSet, inputs: tuple[InputSpec, ...], *, solo: bool) -> None:
        stage = self.stages[name]
        sp = self.plan.stages[name]
        st = self.states[name]
        b = st.batch(k)
        assert b.key is not None and sp.slot is not None
        part = b.next_part
        b.next_part += 1
        side = {s: tuple(InputPart(p.path) for j in sorted(self.states[s].batches)
                         for p in distinct_parts(self.states[s].batches[j].parts)) for s in stage.side}
        executor = self._executor(sp.slot)
        caps = executor.capabilities
        task = BatchTask(
            handle=self._handle, stage=name, batch=k, part=part, inputs=inputs,
            output_path=self.store.part_path(self.run_id, name, k, b.key, part),
            params_json=self.params_json, side=side,
            rate_share=1.0 if caps.in_process else 1.0 / max(1, caps.max_workers),
            pipeline=self.pipeline if caps.in_process else None,
        )
        future = executor.submit(task, key=task.key)
        now = time.monotonic()
        deadline = None
        if stage.timeout is not None and hasattr(executor, "kill_workers"):
            queued = 1 if solo else 2  # a task may wait behind one other on its worker
            deadline = now + queued * stage.timeout * max(1, len(ids)) + WATCHDOG_GRACE_SECONDS
        self._running[future] = _Running(name, k, ids, sp.slot, solo, now, deadline)
        if solo:
            self._solo_running[sp.slot] = self._solo_running.get(sp.slot, 0) + 1
        b.scheduled = b.scheduled | ids
        b.in_flight += 1
        st.in_flight += 1
        st.items_in_flight += len(ids)
        self._slot_in_flight[sp.slot] = self._slot_in_flight.get(sp.slot, 0) + 1
        if st.started is None:
            st.started = time.time()

    # == executors ==============================================================================
    def _executor(self, slot: str) -> Any:
        executor = self._executors.get(slot)
        if executor is None:
            spec = self.plan.executors[slot]
            executor = executor_registry.get_executor(spec.backend, **dict(spec.options))
            if not executor.capabilities.in_process and self._handle is None:
                self._handle = self._worker_handle(spec.backend)
            executor.start()
            self._executors[slot] = executor
            caps = executor.capabilities
            if spec.backend not in ("threads", "asyncio", "inline"):
                self._slot_cap[slot] = max(2, 2 * caps.max_workers)
                for name, sp in self.plan.stages.items():
                    if sp.slot == slot:
                        self.states[name].sizer.workers = caps.max_workers
            self.observer.executor_started(slot, executor)
        return executor

    def _start_executors(self) -> None:
        """Start every executor a stage still needs now: a bad --address fails at once, pools warm up,
        and workers on other hosts prove they can reach the store before any work is done."""
        if self.store.remote:
            self.store.check_reachable()
        for slot in self.plan.executors:
            if any(sp.slot == slot and not self.states[n].final for n, sp in self.plan.stages.items()):
                executor = self._executor(slot)
                if executor.capabilities.distributed:
                    self._probe_store(executor)

    def _probe_store(self, executor: Any) -> None:
        import functools
        import secrets

        token = secrets.token_hex(8)
        location = self.store.run_data(self.run_id, f".probe-{token}")
        batch_files.write_bytes(location, token.encode(), rows=0, fsync=False)
        future = executor.submit(functools.partial(batch_files.probe, location, token), key=f"store-probe-{token}")
        try:
            future.result(timeout=120)
        except Exception as exc:  # noqa: BLE001 - any failure means the workers cannot use the store
            raise UsageError(f"store {self.store.data_root} is not reachable from the {executor.name} workers: "
                             f"{exc}; use a folder they share or a URL (s3://...) they can reach") from None

    def _worker_handle(self, backend: str) -> Any:
        """How out-of-process workers find the pipeline; a stage that cannot travel is a usage error."""
        import sys

        module = sys.modules.get(self.pipeline.module)
        importable = module is not None and self.pipeline.module not in ("__main__", "__mp_main__") and any(
            v is self.pipeline for v in vars(module).values())
        if importable:
            return handle_for(self.pipeline)
        remote = {n for n, sp in self.plan.stages.items()
                  if sp.slot is not None and not self._in_process(self.plan.executors[sp.slot].backend)}
        travelling = _trimmed(self.pipeline, keep=remote)
        try:
            return handle_for(travelling)
        except Exception as exc:  # noqa: BLE001 - cloudpickle raises many types
            culprit = _unpicklable_stage(self.pipeline, remote) or "?"
            raise UsageError(
                f"stage {culprit!r} cannot be sent to {backend} workers ({type(exc).__name__}: {exc}); define "
                f"the pipeline at module level in a dags module, or run the stage on threads "
                f"(executor=\"threads\")") from None

    @staticmethod
    def _in_process(backend: str) -> bool:
        return backend in ("inline", "threads", "asyncio")

    def _shutdown_executors(self, *, cancel: bool) -> None:
        executors, self._executors = list(self._executors.values()), {}
        for executor in executors:
            try:
                executor.shutdown(wait=not self._hard_stop, cancel_pending=cancel)
            except Exception as exc:  # noqa: BLE001 - shutting down must not mask the run's result
                self.observer.message(f"shutting down {executor!r} failed: {exc}", level="warning")

    # == the loop ===============================================================================
    def _loop(self) -> None:
        while True:
            if not self.stopping:
                self._schedule()
            if self._finished():
                return
            futures = set(self._running) | set(self._source_futures)
            if not futures:
                if self.stopping:
                    return
                raise RuntimeError(f"pipelines bug: nothing to wait for, but stages are not final: {self._debug_state()}")
            done, _ = wait(futures, timeout=0.25, return_when=FIRST_COMPLETED)
            for future in done:
                self._complete(future)
            self._watchdog()
            self._progress()

    def _watchdog(self) -> None:
        """Kill the workers of process tasks far past their timeout (stuck in C code, say)."""
        now = time.monotonic()
        for future, running in list(self._running.items()):
            if running.deadline is None or now < running.deadline or future in self._overdue:
                continue
            self._overdue.add(future)
            self._collateral.update(f for f, r in self._running.items() if r.slot == running.slot and f is not future)
            executor = self._executors.get(running.slot)
            self.observer.message(f"stage {running.stage!r} batch {running.batch}: a task ran past its timeout; "
                                  f"killing its worker", level="warning")
            if executor is not None:
                executor.kill_workers()

    def _finished(self) -> bool:
        if self.stopping:
            return not self._running
        return all(self.states[n].final for n in self.order)

    def _complete(self, future: Future[Any]) -> None:
        source = self._source_futures.pop(future, None)
        if source is not None:
            self._source_done(future, source)
            return
        running = self._running.pop(future)
        name, k = running.stage, running.batch
        st = self.states[name]
        b = st.batch(k)
        b.in_flight -= 1
        b.scheduled = b.scheduled - running.ids
        st.in_flight -= 1
        st.items_in_flight -= len(running.ids)
        self._slot_in_flight[running.slot] -= 1
        if running.solo:
            self._solo_running[running.slot] -= 1
        overdue = future in self._overdue
        collateral = future in self._collateral and not overdue
        self._overdue.discard(future)
        self._collateral.discard(future)
        try:
            result: TaskResult = future.result()
        except WorkerLostError as exc:
            if not collateral:  # a collateral task's ids are simply pending again
                self._worker_lost(name, k, running, exc, overdue)
            return
        except Exception as exc:  # noqa: BLE001 - the task itself broke (input unreadable, ...)
            self._task_broken(name, k, running, exc)
            return
        self._record(name, k, result)

    def _positioned(self, name: str, k: int, errors: Iterable[ItemError]) -> list[ItemError]:
        """Errors with each item's index in the whole source, where its ids come from one."""
        origin = self._origin.get(name)
        offset = self._source_offsets.get(origin, {}).get(k) if origin else None
        if offset is None:
            return list(errors)
        return [dataclasses.replace(e, position=offset + e.item) if e.item is not None else e for e in errors]

    def _record(self, name: str, k: int, result: TaskResult) -> None:
        st = self.states[name]
        b = st.batch(k)
        stage = self.stages[name]
        assert b.key is not None
        errors = self._positioned(name, k, result.errors)
        self.store.ledger.record_part(run_id=self.run_id, stage=name, batch=k, key=b.key,
                                      fingerprint=self.fingerprints[name], info=result.file, done=result.done,
                                      errors=errors)
        st.sizer.observe(result.items, result.seconds)
        st.seconds += result.seconds
        if result.file is not None:
            info = result.file
            b.parts.append(Part(b.key, info.path, result.done, info.rows, info.bytes, info.checksum,
                                result.done.first() if result.done else -1))
            b.rows += info.rows
            b.computed_parts += 1
        if stage.itemwise:
            b.done = b.done | result.done
            st.items_done += len(result.done)
        else:
            b.done = result.done if result.file is not None else IdSet()
            st.items_done += 1 if result.file is not None else 0
        if errors:
            self._failed_items(name, k, errors)
        if stage.itemwise:
            self._publish(name, k, result.done)
        self._finalize_batch(name, k)

    def _failed_items(self, name: str, k: int, errors: Iterable[ItemError]) -> None:
        st = self.states[name]
        b = st.batch(k)
        stage = self.stages[name]
        errors = list(errors)
        failed = IdSet.of(e.item for e in errors if e.item is not None)
        if not stage.itemwise:
            failed = IdSet.span(0, 1)
        b.failed = b.failed | failed
        st.items_failed += len(errors)
        first = errors[0]
        if not st.first_error:
            st.first_error = f"{first.error_type}: {first.message}"
        if stage.on_error == "fail" and self.failure is None:
            self._fail(StageFailed(name, first.message, batch=k, item=first.item, error_type=first.error_type,
                                   remote_traceback=first.traceback, position=first.position))

    def _worker_lost(self, name: str, k: int, running: _Running, exc: WorkerLostError,
                     overdue: bool = False) -> None:
        """A worker died. Its task's items become suspects that run alone, in halves, until the
        item that kills its worker is found: that one fails with the cause, the rest go on."""
        b = self.states[name].batch(k)
        stage = self.stages[name]
        cause = exc.cause
        if overdue and stage.timeout is not None:
            cause = f"timed out: ran past {stage.timeout:g} s per item, and its worker was killed"
        if not running.solo:
            self._add_suspects(name, b, running.ids)
            self.observer.message(f"stage {name!r} batch {k}: {cause}; re-running its {len(running.ids):,} "
                                  f"item(s) alone to find the cause", level="warning")
            return
        if stage.itemwise and len(running.ids) > 1:
            self._add_suspects(name, b, *running.ids.take(len(running.ids) // 2))
            return
        item = running.ids.first() if stage.itemwise else None
        errors = self._positioned(name, k, [ItemError(name, k, item, "WorkerLostError", cause, "", 1, None)])
        self.store.ledger.record_errors(run_id=self.run_id, key=b.key or "", errors=errors)
        self._failed_items(name, k, errors)
        self._finalize_batch(name, k)

    def _task_broken(self, name: str, k: int, running: _Running, exc: BaseException) -> None:
        import errno
        import traceback

        stage = self.stages[name]
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):
            # the disk, not the items: stop cleanly; the items stay pending for a resume
            self._fail(StageFailed(name, f"cannot write its checkpoint: {exc.strerror or exc}", batch=k,
                                   error_type=type(exc).__name__))
            self._finalize_batch(name, k)
            return
        b = self.states[name].batch(k)
        tb = "".join(traceback.format_exception(exc))
        items = list(running.ids) if stage.itemwise else [None]
        errors = self._positioned(name, k, [ItemError(name, k, i, type(exc).__name__, str(exc) or type(exc).__name__,
                                                      tb, 1, None) for i in items])
        self.store.ledger.record_errors(run_id=self.run_id, key=b.key or "", errors=errors)
        self._failed_items(name, k, errors)
        self._finalize_batch(name, k)

    def _fail(self, failure: StageFailed) -> None:
        if self.failure is None:
            self.failure = failure
        self.stopping = True

    def _interrupt(self) -> None:
        """First Ctrl-C: stop scheduling, keep what finishes within the grace period."""
        self.interrupted = True
        self.stopping = True
        self.observer.message("interrupted: finishing running tasks (Ctrl-C again to stop at once)", level="warning")
        for future in list(self._running):
            if future.cancel():
                self._complete(future)
        for future in list(self._source_futures):
            future.cancel()
            self._source_futures.pop(future, None)
        deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
        try:
            while self._running and time.monotonic() < deadline:
                done, _ = wait(set(self._running), timeout=max(0.0, deadline - time.monotonic()),
                               return_when=FIRST_COMPLETED)
                for future in done:
                    self._complete(future)
        except KeyboardInterrupt:  # the second Ctrl-C: stop now, keep what is recorded
            self._hard_stop = True
            self.observer.message("stopping now", level="warning")

    # == finishing ==============================================================================
    def _save_stage(self, name: str, status: str) -> None:
        st = self.states[name]
        self.store.ledger.save_stage(
            self.run_id, name, status=status, batches=len(st.batches), reused=st.reused_batches,
            computed=st.computed_batches, items=st.items_done + st.items_reused, failed=st.items_failed,
            reason=self._stage_reason(name), seconds=st.seconds,
            source_complete=int(self.stages[name].granularity == "source" and st.final))

    def _stage_reason(self, name: str) -> str:
        st = self.states[name]
        if not st.computed_batches or self.stages[name].granularity == "source":
            return ""
        reason = self.reasons.get(name, "")
        if reason:
            return reason
        if self.resumed:
            return "unfinished"
        return "inputs changed"

    def _close(self, started: float) -> RunResult:
        for name in self.order:
            if not self.states[name].final:
                self._save_stage(name, "interrupted" if self.interrupted else "incomplete")
        failures = self.store.ledger.open_errors(self.run_id)
        if self.interrupted:
            status = RunStatus.INTERRUPTED
        elif self.failure is not None or not all(self.states[n].final for n in self.order):
            status = RunStatus.FAILED
        elif failures:
            status = RunStatus.PARTIAL
        else:
            status = RunStatus.OK
        sources = [n for n in self.order if self.stages[n].granularity == "source"]
        items = sum(self.states[n].items_done + self.states[n].items_reused for n in sources)
        message = str(self.failure) if self.failure else None
        self.store.ledger.finish_run(self.run_id, status=status.value, items=items, failed=len(failures),
                                     message=message)
        self._write_dead_letters()
        leaves = tuple(n for n in self.order if not self.consumers[n] and not self.side_users[n])
        result = RunResult(
            run_id=self.run_id, pipeline=self.pipeline.name, status=status,
            stages={n: self._summary(n) for n in self.order}, failures=failures, error=self.failure,
            seconds=time.time() - started, leaves=leaves, store_root=str(self.store.root), resumed=self.resumed)
        self._progress(force=True)
        self.observer.run_finished(result)
        return result

    def _write_dead_letters(self) -> None:
        collecting = [n for n in self.order if self.stages[n].on_error == "collect"]
        if not collecting:
            return
        from .deadletter import write_dead_letters

        write_dead_letters(self.store, self.run_id, collecting)

    def _summary(self, name: str) -> StageSummary:
        st = self.states[name]
        return StageSummary(
            stage=name, backend=self.plan.stages[name].backend, batches=len(st.batches),
            reused_batches=st.reused_batches, computed_batches=st.computed_batches,
            items=st.items_done + st.items_reused, reused_items=st.items_reused, failed_items=st.items_failed,
            rows=st.rows, seconds=st.seconds, reason=self._stage_reason(name))

    def _progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        for name in self.order:
            st = self.states[name]
            self.observer.stage_progress(StageStats(
                stage=name, backend=self.plan.stages[name].backend, items_done=st.items_done,
                items_reused=st.items_reused, items_failed=st.items_failed, items_in_flight=st.items_in_flight,
                batches_final=sum(1 for b in st.batches.values() if b.final), batches_seen=len(st.batches),
                final=st.final, seconds=st.seconds, reason=self.reasons.get(name, "")))

    def _debug_state(self) -> str:
        out = []
        for name in self.order:
            st = self.states[name]
            out.append(f"{name}: final={st.final} upstream_final={st.upstream_final} batches=" + ", ".join(
                f"{k}(key={bool(b.key)} avail={len(b.available)} done={len(b.done)} failed={len(b.failed)} "
                f"pending={len(b.pending)} flight={b.in_flight} up_final={b.upstream_final} final={b.final} ready={b.ready})"
                for k, b in sorted(st.batches.items())))
        return "; ".join(out)


@contextlib.contextmanager
def lifespan(pipeline: Pipeline, params: Any) -> Iterator[None]:
    """Hold the pipeline's lifespan open; set the environment variables it yields."""
    if pipeline.lifespan is None:
        yield
        return
    import inspect

    takes_params = "params" in inspect.signature(pipeline.lifespan).parameters
    with (pipeline.lifespan(params) if takes_params else pipeline.lifespan()) as env:
        saved = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update({k: str(v) for k, v in (env or {}).items()})
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _trimmed(pipeline: Pipeline, keep: set[str]) -> Pipeline:
    """A copy of ``pipeline`` for workers: stages they never run keep their types, not their code."""
    import copy

    clone = copy.copy(pipeline)
    clone._stages = {name: (stage if name in keep else dataclasses.replace(
        stage, fn=_not_here, kwargs={}, resources={}, retry_on=None)) for name, stage in pipeline.stages.items()}
    clone._by_fn = {}
    clone.lifespan = None
    return clone


def _not_here(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("this stage runs on another executor")


def _unpicklable_stage(pipeline: Pipeline, names: set[str]) -> str | None:
    import cloudpickle

    for name in pipeline.order():
        if name not in names:
            continue
        stage = pipeline.stages[name]
        try:
            cloudpickle.dumps((stage.fn, dict(stage.kwargs), dict(stage.resources), stage.retry_on))
        except Exception:  # noqa: BLE001
            return name
    return None


def _part_number(path: str) -> int:
    stem = os.path.basename(path).rsplit(".", 1)[0]
    try:
        return int(stem.rsplit("-", 1)[-1])
    except ValueError:
        return 0


def run(pipeline: Pipeline, params: Any = None, *, store: Store | str | None = None, executor: str | None = None,
        fresh: bool | Iterable[str] = False, observers: Iterable[RunObserver] = (), **options: Any) -> RunResult:
    """Run ``pipeline`` and return its result (the Python equivalent of ``pipelines run``).

    Example:
        >>> result = run(pipeline, {"limit": 100}, executor="threads")      # doctest: +SKIP
        >>> result.status, result.table().num_rows                           # doctest: +SKIP
    """
    fresh_opt = fresh if isinstance(fresh, bool) else frozenset(fresh)
    run_options = RunOptions(executor=executor, fresh=fresh_opt, **options)
    if executor is not None:
        executor_registry.check_name(executor)
    return Runner(pipeline, params=params, options=run_options, store=store, observers=observers).run()


def resume(run_id: str, *, store: Store | str | None = None, observers: Iterable[RunObserver] = (),
           pipeline: Pipeline | None = None, executor: str | None = None, **options: Any) -> RunResult:
    """Continue run ``run_id`` (or ``"latest"``): reuse what is done, compute the rest."""
    from . import loader

    the_store = store if isinstance(store, Store) else Store(store)
    try:
        row = the_store.ledger.latest_run() if run_id == "latest" else the_store.ledger.run(run_id)
        if row is None:
            raise UsageError(f"no run {run_id!r} in store {the_store.root}")
        if pipeline is None:
            pipeline = loader.load(row["pipeline"], row["dags_dir"]) if row["dags_dir"] else _load_by_module(row)
        stored = json.loads(row["options"] or "{}")
        stored.update({k: v for k, v in options.items() if v is not None})
        if executor is not None:
            stored["executor"] = executor
        stored = {k: v for k, v in stored.items() if k in RunOptions.__dataclass_fields__}
        params = json.loads(row["params"]) if row["params"] else None
        runner = Runner(pipeline, params=params, options=RunOptions(**stored), store=the_store,
                        observers=observers, resume=row["id"], dags_dir=row["dags_dir"])
        return runner.run()
    finally:
        if not isinstance(store, Store):
            the_store.close()


def _load_by_module(row: Any) -> Pipeline:
    import importlib

    from .loader import find_pipeline

    try:
        return find_pipeline(importlib.import_module(row["module"]), row["pipeline"])
    except ImportError as exc:
        raise UsageError(f"run {row['id']}: cannot import module {row['module']!r} of pipeline "
                         f"{row['pipeline']!r}: {exc}") from None


__all__ = ["Runner", "run", "resume", "PipelinesError"]
