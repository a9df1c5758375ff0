"""The driver: one scheduling loop that streams batches through the DAG.

Model (cf. dask's ``local.py``): the source thread cuts items into batches and checkpoints
them; each finished task reports which item ids of which batch it computed; those ids
become *available* to the stage's consumers at once, so a downstream map starts on batch 0
while its upstream still works on it — streaming at the grain of tasks. Consumers that
renumber rows (flat-maps, batch and reduce stages) wait for whole batches, reduce stages for
whole inputs.

Each turn of the loop:
    1. schedule the stages an event touched ("dirty"), downstream first (drain before
       filling); a stage submits tasks while it and its executor have room (about two tasks
       per worker); a source reads ahead only while few of its batches are open (backpressure);
    2. wait for the first future to finish (any mix of backends);
    3. record it in the ledger and offer its ids downstream.

Keys make reuse exact (see ``keys.py``): whatever the ledger holds under a batch's key, from
an earlier run or an earlier attempt of this run, is reused item by item; only the rest is
computed. Two drivers on one store take turns on a batch through leases (``leases.py``).
Failures are handled in ``recovery.py``, executors in ``workers.py``, the run's rows in the
ledger (its start and end) in ``record.py``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from executors import WorkerLostError
from pipelines._engine import interrupts
from pipelines._engine.batching import TaskSizer
from pipelines._engine.dispatch import Dispatch
from pipelines._engine.feed import SourceFeed, lifespan
from pipelines._engine.graph import RunGraph
from pipelines._engine.group import Gathering, in_flight
from pipelines._engine.idset import IdSet
from pipelines._engine.item_reuse import ItemIndex
from pipelines._engine.keys import Keys
from pipelines._engine.leases import RETRY_SECONDS, Leases
from pipelines._engine.plan import Plan, RunOptions, plan
from pipelines._engine.record import Ending, RunRecord
from pipelines._engine.recovery import Recovery, Running
from pipelines._engine.schemas import StageSchemas
from pipelines._engine.state import BatchState, RunContext, StageState, describe
from pipelines._engine.task import TaskResult
from pipelines._engine.task_inputs import TaskInputs
from pipelines._engine.workers import Workers
from pipelines.define import effects, resources
from pipelines.define.model import Pipeline
from pipelines.errors import StageFailed, UsageError
from pipelines.observe.hooks import Observers, RunObserver
from pipelines.observe.progress import Progress
from pipelines.observe.result import RunResult
from pipelines.store import Store
from pipelines.store.ledger import Part, TaskTiming

INTERRUPT_GRACE_SECONDS = 5.0  # running tasks may finish this long after Ctrl-C
STOP_GRACE_SECONDS = 2.0  # then tasks asked to stop may take this long to report what they finished
logger = logging.getLogger("pipelines.run")  # one stable name for the engine, whatever module logs


class Runner:
    """Runs one pipeline once (a new run, or a resume of an earlier one).

    It owns the scheduling loop and the run's state (``states``: which ids are where), and
    works with collaborators that each have one job: ``graph`` (the run's shape, pure),
    ``feed`` (sources), ``keys`` (batch keys and reuse), ``recovery`` (failures) and
    ``workers`` (executors). They change the state only through the ``Flow`` methods below.

    Example:
        >>> result = Runner(pipeline, params={"limit": 10}).run()       # doctest: +SKIP
        >>> result.table("by_category").to_pandas()                     # doctest: +SKIP
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        params: Any = None,
        options: RunOptions = RunOptions(),
        store: Store | str | None = None,
        observers: Iterable[RunObserver] = (),
        resume: str | None = None,
        dags_dir: str | None = None,
    ) -> None:
        self.pipeline = pipeline.validate()
        self.params = pipeline.parse_params(params)
        self.params_json = self.params.model_dump_json() if self.params is not None else None
        self.options = options
        self.plan: Plan = plan(pipeline, options)
        if options.address and not any(sp.backend in ("dask", "ray") for sp in self.plan.stages.values()):
            raise UsageError(
                f"--address {options.address} is for a Dask or Ray cluster, but no stage runs on "
                f"one: add --executor dask (or ray)"
            )
        self._own_store = not isinstance(store, Store)
        self.store = store if isinstance(store, Store) else Store(store)
        self.observer = Observers(list(observers))
        self.resumed = resume is not None
        self.run_id = resume or self.store.unused_run_id()
        self.dags_dir = dags_dir
        self.graph = RunGraph(self.pipeline, self.plan)
        self.order = self.graph.order
        self.stages = self.graph.stages
        self.consumers = self.graph.consumers
        self._final_stages = 0
        self._open_on_slot = {slot: len(names) for slot, names in self.graph.on_slot.items()}  # not yet final
        self.side_effects = effects.not_reusable(self.stages, self.params, resumed=self.resumed)
        self.fresh = self._expand_fresh(options.fresh) | set(self.side_effects)
        self.states: dict[str, StageState] = {}
        self.fingerprints: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self.failure: StageFailed | None = None
        self.stopping = False
        self.interrupted = False
        self.keys = Keys(self.stages, self.states, self.fingerprints, self.store.ledger, self.observer, self.fresh)
        self.schemas = StageSchemas(self.store.ledger, self.fingerprints)  # one Arrow schema per stage
        self.item_index = ItemIndex(self.store, self.run_id, self.stages, self.fingerprints, self.fresh)
        self.workers = Workers(self.pipeline, self.plan, self.observer)
        ctx = RunContext(self.graph, self.plan, self.states, self.store, self.run_id, self.observer, self.workers, self)
        self.feed = SourceFeed(
            ctx, params=self.params, resumed=self.resumed, fresh=self.fresh, fingerprints=self.fingerprints
        )
        self._running: dict[Future[Any], Running] = {}
        self._groups: dict[Future[Any], tuple[Running, ...]] = {}  # a grouped task's other batches
        self.leases = Leases(self.store.ledger)
        self.recovery = Recovery(ctx, running=self._running, feed=self.feed)
        self._dirty: set[str] = set(self.order)
        self._waiting: dict[str, set[str]] = {}  # slot -> stages that found it full
        self._item_cap: dict[str, int] = {}
        self.inputs = TaskInputs(self.stages, self.states)
        self.dispatch = Dispatch(
            ctx,
            pipeline=self.pipeline,
            params_json=self.params_json,
            inputs=self.inputs,
            item_index=self.item_index,
            recovery=self.recovery,
            schemas=self.schemas,
            running=self._running,
            groups=self._groups,
        )
        self.progress = Progress(self.graph, self.plan, self.states, self.observer, self.reasons)
        self.record = RunRecord(
            self.pipeline,
            self.plan,
            self.graph,
            self.store,
            self.run_id,
            states=self.states,
            fingerprints=self.fingerprints,
            reasons=self.reasons,
            resumed=self.resumed,
            observer=self.observer,
        )

    # == entry ==================================================================================
    def run(self) -> RunResult:
        started = time.time()
        self.store.lock(self.run_id)
        try:
            with lifespan(self.pipeline, self.params):
                try:
                    # before the run is recorded: a bad address, an unreachable store or a stage
                    # that cannot travel to its workers leaves no run behind
                    self.workers.start_all(list(self.plan.executors), self.store, self.run_id)
                    self._open_run()
                    self.observer.run_started(self.run_id, self.pipeline.name, self.plan, resumed=self.resumed)
                    self._loop()
                except KeyboardInterrupt:
                    if not self.states:
                        raise
                    self._interrupt()
                finally:
                    stop = self.interrupted or self.failure is not None
                    if not self.workers.hard_stop:
                        resources.close_all()  # while the executors' loops still run
                    self.workers.shutdown(cancel=stop, wait=not self.interrupted)
            return self._close(started)
        finally:
            self.workers.shutdown(cancel=True, wait=False)
            self.feed.close()
            with contextlib.suppress(sqlite3.Error, OSError):  # a full disk: they expire on their own
                self.leases.release_all()
            self.item_index.close()
            self.store.unlock(self.run_id)
            if not self.states and not self.resumed:  # refused before it was recorded: leave nothing
                shutil.rmtree(self.store.run_dir(self.run_id), ignore_errors=True)
            if self._own_store:
                self.store.close()

    # == setup ==================================================================================
    def _expand_fresh(self, fresh: bool | frozenset[str]) -> set[str]:
        """The stages to recompute: those named, and what depends on them."""
        if fresh is True:
            return set(self.order)
        if not fresh:
            return set()
        for name in fresh:
            self.pipeline[name]  # raises with "did you mean" for unknown names
        return self.graph.with_dependents(set(fresh))

    def _open_run(self) -> None:
        pinned = self.record.open(
            params_json=self.params_json,
            options=self.options,
            dags_dir=self.dags_dir,
            fresh=self.fresh,
            side_effects=self.side_effects,
        )
        for name in self.order:
            sp = self.plan.stages[name]
            workers = min(self.workers.workers(sp.slot), sp.max_tasks) if sp.slot else 1  # a shared pool: its share
            sizer = TaskSizer(fixed=sp.task_size, target=sp.target_seconds, start=sp.start_size, workers=workers)
            if sp.max_size:
                sizer.maximum = sp.max_size
            self.states[name] = StageState(name, sizer)
            if (
                sp.max_items is not None
                and self.stages[name].is_async
                and sp.slot is not None
                and not self.plan.executors[sp.slot].in_process
            ):
                self._item_cap[name] = sp.max_items * workers  # each worker loop has its own budget
        self.record.log_plan(self.workers)
        for name in self.graph.streams:
            self.feed.open(name, pinned.get(name))

    # == keys and reuse =========================================================================
    def _ensure_key(self, name: str, k: int) -> bool:
        """Give batch ``k`` its key and adopt what the ledger holds under it; False: not yet."""
        b = self.states[name].batch(k)
        if b.key is not None:
            return True
        key = self.keys.key_for(name, k)
        if key is None:
            return False
        b.key = key
        self._adopt(name, k, b)
        return True

    def _adopt(self, name: str, k: int, b: BatchState) -> None:
        """Reuse what the ledger holds under ``b.key`` (from any run, or another driver just now)."""
        before = b.done
        reused = self.keys.reuse(name, k, b) - before
        if reused:  # a batch or reduce stage counts one item per batch, computed or reused
            self.states[name].items_reused += len(reused) if self.stages[name].itemwise else 1
            if self.stages[name].itemwise:
                self.publish(name, k, reused)

    def _leased(self, name: str, k: int, b: BatchState) -> bool:
        """Whether this driver holds ``b.key``'s lease (asked for after the turn when not). Once it
        does, what another driver recorded under the key meanwhile is adopted first."""
        assert b.key is not None
        if not self.leases.may_compute(b.key, name):
            return False
        if self.leases.newly_granted(b.key) and name not in self.fresh:
            self._adopt(name, k, b)
        return True

    # == streaming ids downstream ===============================================================
    def publish(self, name: str, k: int, ids: IdSet) -> None:
        """Offer newly done ids of ``name``'s batch ``k`` to consumers that take them one by one."""
        if not ids or not self.stages[name].keeps_item_ids:
            return
        for c in self.consumers[name]:
            if self.stages[c].itemwise:
                cb = self.states[c].batch(k)
                cb.available = cb.available | ids
                self._dirty.add(c)

    def finalize_batch(self, name: str, k: int) -> None:
        st = self.states[name]
        b = st.batch(k)
        if b.final or not b.settled():
            return
        stage = self.stages[name]
        if not stage.itemwise and stage.granularity != "source" and not (b.done or b.failed or b.parts):
            return  # a table stage that has not run yet
        b.final = True
        self.leases.done(b.key)
        st.rows += b.rows
        if b.key is not None:
            status = "failed" if b.failed and not b.done else ("partial" if b.failed else "done")
            self.store.ledger.set_batch(self.run_id, name, k, b.key, status, b.rows, len(b.failed))
        for c in self.consumers[name]:
            cstage = self.stages[c]
            if cstage.granularity == "reduce":
                continue
            cb = self.states[c].batch(k)
            if cstage.itemwise and not stage.keeps_item_ids:
                cb.available = cb.available | IdSet.span(0, b.rows)
            cb.ready = cstage.granularity == "batch"
            cb.upstream_final = True
            self._dirty.add(c)
        self.feed.batch_final(name, k)
        self.check_stage_final(name)

    def check_stage_final(self, first: str) -> None:
        """Mark ``first`` final if it is done; then the stages waiting on it (a worklist, no recursion)."""
        todo = [first]
        while todo:
            name = todo.pop()
            st = self.states[name]
            stage = self.stages[name]
            if st.final:
                continue
            if stage.granularity != "source":
                st.upstream_final = all(self.states[u].final for u in stage.inputs)
            if not st.upstream_final or any(not b.final for b in st.batches.values()):
                continue
            if stage.granularity == "reduce" and 0 not in st.batches:
                b = st.batch(0)  # the reduce's one batch: it may run now
                b.ready = b.upstream_final = True
                self._dirty.add(name)
                continue
            st.final = True
            st.ended = time.time()
            self._final_stages += 1
            slot = self.plan.stages[name].slot
            if slot is not None and slot.startswith("threads"):
                self._open_on_slot[slot] -= 1
                if not self._open_on_slot[slot]:
                    self.workers.release(slot)  # its stages are done: the pool's threads end now
            self.record.stage_finished(name)
            for c in self.consumers[name] + self.graph.side_users[name]:
                self._dirty.add(c)
                todo.append(c)

    # == scheduling =============================================================================
    def mark_dirty(self, name: str) -> None:
        self._dirty.add(name)

    def mark_slot(self, slot: str | None) -> None:
        if slot is not None:
            self._dirty.update(self.graph.on_slot.get(slot, ()))

    def fail(self, failure: StageFailed) -> None:
        if self.failure is None:
            self.failure = failure
        self.stopping = True

    def _schedule(self) -> None:
        """Visit the stages events touched, downstream first, until none is left."""
        while self._dirty and not self.stopping:
            batch = sorted(self._dirty, key=self.graph.rank.__getitem__, reverse=True)
            self._dirty.clear()
            for name in batch:
                if self.stages[name].granularity == "source":
                    self.feed.schedule(name)
                elif not self.states[name].final:
                    (self._schedule_items if self.stages[name].itemwise else self._schedule_table)(name)

    def _room(self, name: str, items: int = 0) -> bool:
        sp = self.plan.stages[name]
        st = self.states[name]
        if st.in_flight >= sp.max_tasks:
            return False
        cap = self._item_cap.get(name, sp.max_items)
        if cap is not None and st.items_in_flight and st.items_in_flight + items > cap:
            return False
        assert sp.slot is not None  # only sources run on the driver, and they are not scheduled here
        if self.workers.has_room(sp.slot):
            return True
        self._waiting.setdefault(sp.slot, set()).add(name)  # marked again when the slot frees up
        return False

    def _schedule_items(self, name: str) -> None:
        st = self.states[name]
        stage = self.stages[name]
        groups = Gathering() if stage.itemwise and not stage.is_async and not self.recovery.quarantined(name) else None
        for k in sorted(st.batches):
            b = st.batches[k]
            if b.final or not self._ensure_key(name, k) or (b.pending and not self._leased(name, k, b)):
                continue
            if self.recovery.quarantined(name):
                if b.suspects and self.recovery.slot_idle(name):
                    self.dispatch.items(name, k, self.recovery.pop_suspect(name, b), solo=True)
                continue
            size = 0
            while pending := b.pending:
                size = size or st.sizer.size(len(pending), final=b.upstream_final)  # once a pass: no halving
                if len(pending) < size and not b.upstream_final and st.in_flight:
                    break  # wait for more ids rather than send a tiny task
                if len(pending) < size and groups is not None:  # the whole rest of a final batch: a group may take it
                    if groups.add(k, pending, size):
                        if not self._room(name, groups.items):
                            return
                        self.dispatch.group(name, groups.take())
                    break
                if not self._room(name, min(size, len(pending))):
                    return
                self.dispatch.items(name, k, pending.take(size)[0], solo=False)
            self.finalize_batch(name, k)
        if groups is not None and groups.ready(st) and self._room(name, groups.items):
            self.dispatch.group(name, groups.take())

    def _schedule_table(self, name: str) -> None:
        st = self.states[name]
        for k in sorted(st.batches):
            b = st.batches[k]
            if b.final or not b.ready or b.in_flight or not self._ensure_key(name, k):
                continue
            if not (b.done or b.parts) and not self._leased(name, k, b):
                continue
            if b.done or b.parts:  # reused
                self.finalize_batch(name, k)
            elif self.recovery.quarantined(name):
                if b.suspects and self.recovery.slot_idle(name):
                    self.dispatch.submit(
                        name, k, self.recovery.pop_suspect(name, b), self.inputs.for_table(name, k), solo=True
                    )
            elif not b.suspects and not b.failed and self._room(name):
                self.dispatch.submit(name, k, IdSet.span(0, 1), self.inputs.for_table(name, k), solo=False)

    # == the loop ===============================================================================
    def _loop(self) -> None:
        while True:
            with interrupts.deferred(), self.store.ledger.batch():  # one transaction a turn, not three a task
                self._schedule()
            if ready := self.leases.sync():  # outside the turn's transaction: it never aborts one
                self._dirty.update(ready)
                continue
            if self._finished():
                return
            futures = set(self._running) | set(self.feed.futures)
            if not futures and not self.leases.waiting:
                if self.stopping:
                    return
                raise RuntimeError(
                    f"pipelines bug: nothing to wait for, but stages are not final: {describe(self.states)}"
                )
            if futures:
                timeout = RETRY_SECONDS if self.leases.waiting else 0.25
                done, _ = wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
            else:  # only batches another driver computes
                time.sleep(RETRY_SECONDS)
                done = set()
            try:
                with interrupts.deferred(), self.store.ledger.batch():  # Ctrl-C waits for the commit
                    for future in done:
                        self._complete(future)
            except (sqlite3.Error, OSError) as exc:  # the ledger's disk is full: stop cleanly
                self.fail(
                    StageFailed(self.order[0], f"the ledger could not be written: {exc}", error_type=type(exc).__name__)
                )
            self.recovery.watchdog()
            self._dirty.update(self.leases.due())
            self.progress.tick()

    def _finished(self) -> bool:
        if self.stopping:
            return not self._running
        return self._final_stages == len(self.order)

    def _complete(self, future: Future[Any]) -> None:
        if self.feed.complete(future):
            return
        running = self._running.pop(future)
        runs = (running, *self._groups.pop(future, ()))
        name = running.stage
        in_flight(self.states[name], runs, -1)
        self.workers.in_flight[running.slot] -= 1
        self._dirty.add(name)
        self._dirty.update(self._waiting.pop(running.slot, ()))
        if running.solo:
            self.recovery.solo_finished(running.slot)
        overdue, collateral = self.recovery.lost_kind(future)
        if future.cancelled():  # never started (Ctrl-C): its ids are simply pending again
            return
        try:
            result = future.result()
        except WorkerLostError as exc:
            if not collateral:  # a collateral task's ids are simply pending again
                for r in runs:
                    self.recovery.worker_lost(name, r.batch, r, exc, overdue)
            return
        except Exception as exc:
            for r in runs:
                self.recovery.task_broken(name, r.batch, r, exc)
            return
        for r, one in zip(runs, result if len(runs) > 1 else (result,), strict=True):
            self._record(name, r.batch, one)

    def _record(self, name: str, k: int, result: TaskResult) -> None:
        st = self.states[name]
        b = st.batch(k)
        assert b.key is not None
        result = self.schemas.settle(self.stages[name], k, result)
        errors = self.recovery.positioned(name, k, result.errors)
        timing = (
            TaskTiming(result.worker, result.started, result.ended, result.items, len(errors))
            if result.started
            else None
        )
        self.store.ledger.record_part(
            run_id=self.run_id,
            stage=name,
            batch=k,
            key=b.key,
            fingerprint=self.fingerprints[name],
            info=result.file,
            done=result.done,
            errors=errors,
            task=timing,
            items=result.item_hashes,
        )
        st.sizer.observe(result.items, result.seconds)
        st.seconds += result.seconds
        if result.file is not None:
            info = result.file
            b.parts.append(
                Part(
                    b.key,
                    info.path,
                    result.done,
                    info.rows,
                    info.bytes,
                    info.checksum,
                    result.done.first() if result.done else -1,
                )
            )
            b.rows += info.rows
            b.computed_parts += 1
        if self.stages[name].itemwise:
            b.done = b.done | result.done
            st.items_done += len(result.done) - result.reused
            st.items_reused += result.reused
        else:
            b.done = result.done if result.file is not None else IdSet()
            st.items_done += 1 if result.file is not None else 0
        if errors:
            self.recovery.failed_items(name, k, errors)
        self.publish(name, k, result.done)
        self.finalize_batch(name, k)

    def _interrupt(self) -> None:
        """First Ctrl-C: stop scheduling; running tasks get a grace period, then those that can are
        asked to stop and report the items they finished. Whatever finishes is recorded."""
        self.interrupted = True
        self.stopping = True
        self.observer.message("interrupted: finishing running tasks (Ctrl-C again to stop at once)", level="warning")
        self.feed.cancel()
        stoppable = {f: r.task.stop for f, r in self._running.items() if r.task is not None and r.task.stop}
        try:
            # tasks not started are pending again (a task that can stop is never cancelled: on an
            # event loop "cancel" would drop its finished items with the rest)
            self._record_done([f for f in list(self._running) if f not in stoppable and f.cancel()])
            self._drain(time.monotonic() + INTERRUPT_GRACE_SECONDS)
            if any(f in self._running for f in stoppable):
                for stop in stoppable.values():
                    stop.request()
                self._drain(time.monotonic() + STOP_GRACE_SECONDS)
        except KeyboardInterrupt:  # the second Ctrl-C: stop now, keep what is recorded
            self.workers.hard_stop = True
            self.observer.message("stopping now", level="warning")

    def _drain(self, deadline: float) -> None:
        while self._running and time.monotonic() < deadline:
            done, _ = wait(
                set(self._running), timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_COMPLETED
            )
            self._record_done(done)

    def _record_done(self, futures: Iterable[Future[Any]]) -> None:
        with interrupts.deferred(), self.store.ledger.batch():  # a second Ctrl-C waits for the commit
            for future in futures:
                self._complete(future)

    # == finishing ==============================================================================
    def _ending(self) -> Ending:
        return Ending(self.failure, self.interrupted, complete=self._final_stages == len(self.order))

    def _close(self, started: float) -> RunResult:
        try:
            failures = self.record.end(self._ending())
        except (sqlite3.Error, OSError) as exc:  # a full disk: the result still says what happened
            self.observer.message(f"could not record the end of the run: {exc}", level="warning")
            self.fail(
                StageFailed(self.order[0], f"the ledger could not be written: {exc}", error_type=type(exc).__name__)
            )
            failures = []
        result = self.record.result(
            self._ending(), failures, started=started, progress=self.progress, workers=self.workers
        )
        self.progress.tick(force=True)
        logger.info("run %s %s in %.1f s", self.run_id, result.status.value, result.seconds)
        self.observer.run_finished(result)
        return result
