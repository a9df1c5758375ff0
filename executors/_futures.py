"""The ``concurrent.futures.Future`` a backend hands out for a task it tracks its own way.

Backends whose own futures are not ``concurrent.futures`` futures (Dask, Ray), or whose
errors need translating (joblib), give the caller a ``LinkedFuture`` and settle it from a
done-callback. Three details are easy to get wrong, so they live here once:

- ``cancel()`` must not claim success for a task that is already running on a worker: it
  succeeds only when the backend cancelled the task before it started (as the stdlib pools do).
- A future cancelled with ``Future.cancel`` alone is not "done" for ``concurrent.futures.wait``
  until ``set_running_or_notify_cancel()`` is called; a caller blocked in ``wait`` would hang.
- A shutdown may cancel the future while the backend's callback is settling it; the loser of
  that race must not raise ``InvalidStateError`` in a callback thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any


def _never() -> bool:
    return False


class LinkedFuture(Future):  # type: ignore[type-arg]
    """A future whose ``cancel()`` reaches the backend's task.

    Args:
        cancel_task: cancels the backend's task if it has not started; returns whether it did.
            Backends that cannot tell a queued task from a running one (Dask, Ray) pass none:
            then ``cancel()`` returns False, and only ``shutdown(cancel_pending=True)`` cancels.
    """

    def __init__(self, cancel_task: Callable[[], bool] = _never) -> None:
        super().__init__()
        self._cancel_task = cancel_task

    def cancel(self) -> bool:
        if self.done():
            return self.cancelled()
        if not self._cancel_task():
            return False
        cancel(self)
        return True


def cancel(future: Future[Any]) -> None:
    """Cancel ``future`` now, whatever its task does, and wake everything waiting on it."""
    with contextlib.suppress(RuntimeError, InvalidStateError):
        if Future.cancel(future):  # the base method: ``LinkedFuture.cancel`` would ask the backend
            future.set_running_or_notify_cancel()


def set_result(future: Future[Any], value: Any) -> None:
    """Settle ``future`` with ``value`` unless a shutdown cancelled it meanwhile."""
    with contextlib.suppress(InvalidStateError):
        future.set_result(value)


def set_exception(future: Future[Any], exc: BaseException) -> None:
    """Settle ``future`` with ``exc`` unless a shutdown cancelled it meanwhile."""
    with contextlib.suppress(InvalidStateError):
        future.set_exception(exc)
