"""Observers of a run: progress bars, summaries and dashboards watch; they never steer.

The runner calls these hooks from its own thread; every hook is optional (trio's
``Instrument``, dask's ``Callback``). An observer that raises is reported once and ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plan import Plan
    from .result import RunResult


@dataclass(frozen=True, slots=True)
class StageStats:
    """A snapshot of one stage's progress."""

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


class RunObserver:
    """Base class with no-op hooks; override what you need."""

    def run_started(self, run_id: str, pipeline: str, plan: Plan, *, resumed: bool) -> None: ...

    def executor_started(self, slot: str, executor: Any) -> None: ...

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
            except Exception as exc:  # noqa: BLE001 - a broken progress bar must not fail a run
                self._broken.add(i)
                import sys

                print(f"pipelines: observer {observer!r} failed in {name}: {exc!r}; disabled", file=sys.stderr)

    def run_started(self, *args: Any, **kwargs: Any) -> None:
        self._call("run_started", *args, **kwargs)

    def executor_started(self, *args: Any, **kwargs: Any) -> None:
        self._call("executor_started", *args, **kwargs)

    def stage_progress(self, *args: Any, **kwargs: Any) -> None:
        self._call("stage_progress", *args, **kwargs)

    def message(self, *args: Any, **kwargs: Any) -> None:
        self._call("message", *args, **kwargs)

    def run_finished(self, *args: Any, **kwargs: Any) -> None:
        self._call("run_finished", *args, **kwargs)
