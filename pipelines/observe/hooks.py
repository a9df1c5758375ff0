"""Observers of a run: progress bars, summaries and dashboards watch; they never steer.

The runner calls these hooks from its own thread; every hook is optional (trio's
``Instrument``, dask's ``Callback``). An observer that raises is logged once and ignored.
The run's messages are also logged (logger ``pipelines.observe.hooks``), so an application that
configures ``logging`` sees them without writing an observer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from executors import Executor
    from pipelines._engine.plan import Plan
    from pipelines.observe.result import RunResult

logger = logging.getLogger(__name__)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


MIN_ITEMS_FOR_A_RATE = 10


def items_per_second(computed: int, wall_seconds: float) -> float | None:
    """Items computed per second of a stage's wall time; None below ten items, where a
    duration says more than a rate (a reduce's one task, five items in 0.4 s)."""
    return computed / wall_seconds if computed >= MIN_ITEMS_FOR_A_RATE and wall_seconds > 0 else None


@dataclass(frozen=True, slots=True)
class StageStats:
    """A snapshot of one stage's progress.

    ``items_total`` is what the stage will have processed (done, reused or failed) once
    final; ``None`` while unknown (a source still reading, a flat-map's consumer before the
    flat-map is final). ``wall_seconds`` runs from the stage's first task to its end, while
    ``seconds`` sums its tasks' compute time.
    """

    stage: str
    backend: str
    items_done: int
    items_reused: int
    items_failed: int
    items_in_flight: int
    batches_final: int
    batches_seen: int
    final: bool
    seconds: float
    reason: str = ""
    items_total: int | None = None
    wall_seconds: float = 0.0

    @property
    def items_processed(self) -> int:
        """Items done, reused or failed: what counts towards ``items_total``."""
        return self.items_done + self.items_reused + self.items_failed

    @property
    def items_per_second(self) -> float | None:
        """Items computed so far per second of the stage's wall time (reused items cost nothing)."""
        return items_per_second(self.items_done, self.wall_seconds)


class RunObserver:
    """Base class with no-op hooks; override what you need."""

    def run_started(self, run_id: str, pipeline: str, plan: Plan, *, resumed: bool) -> None: ...

    def executor_started(self, slot: str, executor: Executor) -> None: ...

    def stage_progress(self, stats: StageStats) -> None: ...

    def message(self, text: str, *, level: str = "info") -> None: ...

    def run_finished(self, result: RunResult) -> None: ...


class Observers(RunObserver):
    """Fans hook calls out to several observers, isolating their failures."""

    def __init__(self, observers: list[RunObserver]) -> None:
        self._observers = list(observers)
        self._broken: set[int] = set()

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        for i, observer in enumerate(self._observers):
            if i in self._broken:
                continue
            try:
                getattr(observer, name)(*args, **kwargs)
            except Exception as exc:  # a broken progress bar must not fail a run
                self._broken.add(i)
                logger.warning("observer %r failed in %s: %r; disabled", observer, name, exc)

    def run_started(self, *args: Any, **kwargs: Any) -> None:
        self._call("run_started", *args, **kwargs)

    def executor_started(self, *args: Any, **kwargs: Any) -> None:
        self._call("executor_started", *args, **kwargs)

    def stage_progress(self, *args: Any, **kwargs: Any) -> None:
        self._call("stage_progress", *args, **kwargs)

    def message(self, text: str, *, level: str = "info") -> None:
        """Log the run's message, then hand it to the observers (a reporter shows the log record)."""
        logger.log(_LEVELS.get(level, logging.INFO), "%s", text)
        self._call("message", text, level=level)

    def run_finished(self, *args: Any, **kwargs: Any) -> None:
        self._call("run_finished", *args, **kwargs)
