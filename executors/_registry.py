"""Executor names to backends, imported lazily.

The registry is plain data: ``import executors`` never imports ray, distributed or joblib;
a backend's module is imported when an executor of that name is first made. Unknown names
get a "did you mean"; a missing optional dependency says what to install. There is no
silent fallback to another backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .base import Executor
from .errors import BackendUnavailableError, UnknownExecutorError

_BUILTIN: dict[str, str] = {
    "inline": "executors.inline:InlineExecutor",
    "threads": "executors.threads:ThreadExecutor",
    "processes": "executors.processes:ProcessExecutor",
    "asyncio": "executors.asyncio_loop:AsyncioExecutor",
    "joblib": "executors.joblib_pool:JoblibExecutor",
    "dask": "executors.dask_cluster:DaskExecutor",
    "ray": "executors.ray_cluster:RayExecutor",
}
_EXTRAS: dict[str, str] = {"joblib": "joblib", "dask": "dask", "ray": "ray"}
_extra: dict[str, Callable[..., Executor]] = {}


def register(name: str, factory: Callable[..., Executor]) -> None:
    """Add a third-party backend under ``name`` (a class or any factory of executors)."""
    if name in _BUILTIN:
        raise ValueError(f"executor name {name!r} is built in")
    _extra[name] = factory


def names() -> list[str]:
    """Every registered executor name, built-in and added."""
    return sorted({*_BUILTIN, *_extra})


def check_name(name: str) -> str:
    """Return ``name`` if registered, else raise ``UnknownExecutorError`` with a suggestion."""
    if name not in _BUILTIN and name not in _extra:
        raise UnknownExecutorError(name, choices=names())
    return name


def executor_class(name: str) -> Callable[..., Executor]:
    """The class (or factory) registered under ``name``, importing its module now."""
    if name in _extra:
        return _extra[name]
    module_name, _, cls_name = _BUILTIN[check_name(name)].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = _EXTRAS.get(name, name)
        raise BackendUnavailableError(
            f"executor {name!r} needs an optional dependency ({exc.name or exc}): pip install 'pipelines-dag[{extra}]'"
        ) from exc
    factory: Callable[..., Executor] = getattr(module, cls_name)
    return factory


def get_executor(name: str, **options: object) -> Executor:
    """Make an (unstarted) executor by name.

    Example:
        >>> import os
        >>> with get_executor("processes", max_workers=2) as ex:
        ...     ex.submit(os.getpid, key="pid").result() != os.getpid()
        True
    """
    return executor_class(name)(**options)


def available(name: str) -> bool:
    """True when the backend's dependencies import."""
    try:
        executor_class(name)
    except BackendUnavailableError:
        return False
    return True
