"""Start worker processes without re-running the user's ``__main__`` script in them.

With the spawn and forkserver start methods, multiprocessing makes every new process import
the parent's main script (as ``__mp_main__``) so that functions defined there can be found.
A script that runs a pipeline at top level, without ``if __name__ == "__main__":``, would
then run it again in each worker, which fails or spawns forever. Our workers never need the
main script: tasks find their functions by module path, or carry them by value
(cloudpickle), as loky does (its workers start with ``init_main_module=False``).

multiprocessing decides what a child imports in ``spawn.get_preparation_data``, called while
a process starts, whichever thread starts it (the pool's own manager thread included). That
function is wrapped once, so that for the processes our backends start it leaves out the
main module (``init_main_from_path`` / ``init_main_from_name``) and keeps everything else.
Which processes are ours:

- those started inside ``main_not_imported()`` on the same thread (a thread-local flag,
  so other threads starting their own processes meanwhile are untouched);
- those of a ``no_main_context(method)``, whose processes enter that block when they start;
- those named in ``no_main_for(name)`` while it is active: for libraries that start
  processes from threads of their own (Dask's nannies).

Nothing about ``__main__`` itself changes, so other threads never see it altered.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import multiprocessing
import multiprocessing.context
import multiprocessing.spawn
import threading
from collections.abc import Callable, Iterator
from typing import Any

MAIN_KEYS = ("init_main_from_path", "init_main_from_name")

_local = threading.local()
_names: collections.Counter[str] = collections.Counter()
_names_lock = threading.Lock()
_install_lock = threading.Lock()


def _ours(name: Any) -> bool:
    if getattr(_local, "depth", 0):
        return True
    with _names_lock:
        return bool(_names.get(name))


def _without_main(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    @functools.wraps(original)
    def get_preparation_data(name: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        data = original(name, *args, **kwargs)
        if _ours(name):
            for key in MAIN_KEYS:
                data.pop(key, None)
        return data

    get_preparation_data.__pipelines_no_main__ = True  # type: ignore[attr-defined]
    return get_preparation_data


def install() -> None:
    """Wrap ``multiprocessing.spawn.get_preparation_data`` (once; idempotent)."""
    with _install_lock:
        current = multiprocessing.spawn.get_preparation_data
        if not getattr(current, "__pipelines_no_main__", False):
            multiprocessing.spawn.get_preparation_data = _without_main(current)


@contextlib.contextmanager
def main_not_imported() -> Iterator[None]:
    """Processes this thread starts in this block do not import ``__main__``."""
    install()
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


@contextlib.contextmanager
def no_main_for(name: str) -> Iterator[None]:
    """Processes called ``name`` do not import ``__main__`` while this block is active, from any thread."""
    install()
    with _names_lock:
        _names[name] += 1
    try:
        yield
    finally:
        with _names_lock:
            _names[name] -= 1
            if not _names[name]:
                del _names[name]


def _no_main_context_class(method: str) -> type[multiprocessing.context.BaseContext]:
    """The context class of ``method`` whose processes skip ``__main__``: a subclass of its
    process class whose ``_Popen`` starts the child under ``main_not_imported()``.

    Both classes become globals of this module under fixed names, since a spawned child
    unpickles its process object by reference."""
    base_context = type(multiprocessing.get_context(method))
    base_process: Any = base_context.Process  # type: ignore[attr-defined]  # typeshed leaves it off BaseContext
    stem = "".join(word.title() for word in method.split("_"))

    def _Popen(process_obj: Any) -> Any:
        with main_not_imported():
            return base_process._Popen(process_obj)

    process = _module_class(f"_NoMain{stem}Process", base_process, {"_Popen": staticmethod(_Popen)})
    return _module_class(f"_NoMain{stem}Context", base_context, {"Process": process})


def _module_class(name: str, base: type[Any], namespace: dict[str, Any]) -> type[Any]:
    cls = type(name, (base,), {**namespace, "__module__": __name__, "__qualname__": name})
    globals()[name] = cls
    return cls


# forkserver: POSIX only; fork needs none (a forked child imports nothing: it is a copy)
_CONTEXTS = {
    method: _no_main_context_class(method)
    for method in ("spawn", "forkserver")
    if method in multiprocessing.get_all_start_methods()
}


def no_main_context(method: str) -> multiprocessing.context.BaseContext:
    """A multiprocessing context like ``get_context(method)`` whose processes skip ``__main__``.

    The classes live at module level: a spawned child unpickles its process object by
    reference. A forked child imports nothing (it is a copy of the parent): ``fork`` is
    returned as is.
    """
    multiprocessing.get_context(method)  # a clear ValueError for an unknown method
    if method not in _CONTEXTS:
        return multiprocessing.get_context(method)
    install()
    return _CONTEXTS[method]()
