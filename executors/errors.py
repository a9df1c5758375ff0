"""Errors raised by executors.

```
ExecutorError
 ├─ UnknownExecutorError(ExecutorError, ValueError)     a name not in the registry
 ├─ BackendUnavailableError(ExecutorError, ImportError) an optional dependency is missing
 ├─ ExecutorStateError(ExecutorError, RuntimeError)     submit before start / after shutdown
 └─ WorkerLostError(ExecutorError)                      the worker running a task died
```
"""
from __future__ import annotations

import difflib


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


class WorkerLostError(ExecutorError):
    """The worker process running a task died (segfault, ``os._exit``, out of memory, killed).

    ``cause`` is a short human description such as ``"worker died: signal 11"``.
    """

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__(cause)

    def __reduce__(self):
        return (type(self), (self.cause,))
