"""Errors raised by executors.

```
ExecutorError
 ├─ UnknownExecutorError(ExecutorError, ValueError)     a name not in the registry
 ├─ BackendUnavailableError(ExecutorError, ImportError) an optional dependency is missing
 ├─ ExecutorStateError(ExecutorError, RuntimeError)     submit before start / after shutdown
 ├─ ClusterUnreachableError(ExecutorError, ConnectionError)  a Dask or Ray ``address`` that
 │                                                      does not answer at start
 └─ WorkerLostError(ExecutorError)                      the worker running a task died
```
"""

from __future__ import annotations

import difflib
import signal
from collections.abc import Iterable


class ExecutorError(Exception):
    """Base class of every executor error."""


class UnknownExecutorError(ExecutorError, ValueError):
    """Raised for an executor name that is not registered; suggests close names."""

    def __init__(self, name: str, choices: list[str]) -> None:
        self.name = name
        self.choices = choices
        close = difflib.get_close_matches(name, choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(f"unknown executor {name!r}{hint}; choose one of: {', '.join(choices)}")


class BackendUnavailableError(ExecutorError, ImportError):
    """Raised when a backend's optional dependency is not installed."""


class ExecutorStateError(ExecutorError, RuntimeError):
    """Raised on submit before the executor started or after it shut down."""


class ClusterUnreachableError(ExecutorError, ConnectionError):
    """Raised at start when an existing cluster's ``address`` does not answer in time."""


class WorkerLostError(ExecutorError):
    """The worker process running a task died (segfault, ``os._exit``, out of memory, killed).

    ``cause`` is a short human description such as ``"worker died: signal 11"``.
    """

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__(cause)

    def __reduce__(self) -> tuple[type[WorkerLostError], tuple[str]]:
        return (type(self), (self.cause,))


def describe_exit_codes(codes: Iterable[int | None]) -> str:
    """Describe dead workers for a ``WorkerLostError``: negative codes are signals.

    Example:
        >>> describe_exit_codes([-11, 1])
        'worker died: signal 11 (SIGSEGV), exit code 1'
    """
    parts = []
    for code in sorted({c for c in codes if c not in (None, 0)}):
        if code < 0:
            try:
                parts.append(f"signal {-code} ({signal.Signals(-code).name})")
            except ValueError:
                parts.append(f"signal {-code}")
        else:
            parts.append(f"exit code {code}")
    return "worker died: " + ", ".join(parts) if parts else "worker died"
