"""Task sizes from measured per-item cost (joblib's auto batching, per stage).

A stage starts with small tasks so work streams downstream at once and cost is measured
early; sizes then follow the measured cost toward ``target`` seconds a task, long enough
that per-task overhead (a round trip to a worker, one checkpoint file, one ledger record)
stays a few per cent, short enough to balance load and keep batches flowing. Near the end
of a batch the remaining items are split evenly over the workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MAX_TASK_ITEMS = 1 << 16


@dataclass(slots=True)
class TaskSizer:
    """Chooses how many items the next task of one stage gets.

    Args:
        fixed: the stage's ``task_size``: always that many (no measuring).
        target: seconds of work a task should take.
        start: the size of the first tasks, before any cost is measured.
        workers: tasks that run at once, for splitting the tail evenly.
    """

    fixed: int | None = None
    target: float = 0.1
    start: int = 8
    workers: int = 1
    maximum: int = MAX_TASK_ITEMS
    smallest: float = 0.02  # seconds: a tail split never makes tasks cheaper than this
    _items: float = field(default=0.0, init=False)  # decayed sums of finished tasks' items and seconds
    _seconds: float = field(default=0.0, init=False)
    _samples: int = field(default=0, init=False)

    def observe(self, items: int, seconds: float) -> None:
        """Record a finished task's item count and compute time.

        The cost per item is a ratio of decayed sums, so each task counts by its items: the
        first few-item tasks, which also pay a worker's first call, weigh as little as they
        hold once a larger task reports (an average of per-task ratios let one slow 4-item
        task keep the next dozen tasks small).
        """
        if items <= 0 or self.fixed:
            return
        self._items = 0.7 * self._items + items
        self._seconds = 0.7 * self._seconds + max(seconds, 1e-7)
        self._samples += 1

    @property
    def _cost(self) -> float | None:
        """Seconds per item, once measured."""
        return self._seconds / self._items if self._items else None

    @property
    def cost(self) -> float | None:
        return self._cost

    def least(self) -> int:
        """The fewest items worth a task of their own (``smallest`` seconds), once cost is known."""
        return max(1, int(self.smallest / self._cost)) if self._cost else 1

    def size(self, pending: int, *, final: bool) -> int:
        """Items for the next task, given ``pending`` items waiting; ``final``: no more will come."""
        if self.fixed:
            return self.fixed
        want = self.start if self._cost is None else int(self.target / self._cost + 1e-9) or 1  # 0.1/0.02 is 4.99..
        want = max(1, min(want, self.maximum))
        if final and pending < want * self.workers:  # the batch's tail: share it among the workers,
            floor = int(self.smallest / self._cost) if self._cost else 1  # unless that makes tasks too cheap
            want = max(1, min(want, max(math.ceil(pending / self.workers), floor)))
        return want
