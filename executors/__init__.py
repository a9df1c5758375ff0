"""Executors: one small interface over threads, processes, asyncio, joblib, Dask and Ray.

An executor runs zero-argument callables under a key and returns ``concurrent.futures``
futures. It knows nothing about pipelines. Backends are looked up by name and imported
lazily, so importing this package stays cheap.
"""

from __future__ import annotations

import logging

from ._registry import available, check_name, executor_class, get_executor, names, register
from .base import Capabilities, Executor, ExecutorBase, State
from .errors import (
    BackendUnavailableError,
    ClusterUnreachableError,
    ExecutorError,
    ExecutorStateError,
    UnknownExecutorError,
    WorkerLostError,
)

logging.getLogger(__name__).addHandler(logging.NullHandler())  # a library: the application decides what is shown

__all__ = [
    "BackendUnavailableError",
    "Capabilities",
    "ClusterUnreachableError",
    "Executor",
    "ExecutorBase",
    "ExecutorError",
    "ExecutorStateError",
    "State",
    "UnknownExecutorError",
    "WorkerLostError",
    "available",
    "check_name",
    "executor_class",
    "get_executor",
    "names",
    "register",
]
