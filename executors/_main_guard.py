"""Start worker processes without re-running the user's ``__main__`` script in them.

With the spawn and forkserver start methods, multiprocessing makes every new process import
the parent's main script (as ``__mp_main__``) so that functions defined there can be found.
A script that runs a pipeline at top level, without ``if __name__ == "__main__":``, would
then run it again in each worker, which fails or spawns forever. Our workers never need the
main script: tasks find their functions by module path, or carry them by value
(cloudpickle), as loky does. So while a process starts, the main module is presented as
having no file and no spec, and nothing is re-imported.
"""
from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

_lock = threading.RLock()
_MISSING = object()


@contextlib.contextmanager
def main_not_imported() -> Iterator[None]:
    """Hide ``__main__``'s ``__file__`` and ``__spec__`` while processes start."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    with _lock:
        saved = {name: getattr(main, name, _MISSING) for name in ("__file__", "__spec__")}
        try:
            for name in saved:
                if name == "__spec__":
                    main.__spec__ = None
                elif hasattr(main, name):
                    delattr(main, name)
            yield
        finally:
            for name, value in saved.items():
                if value is _MISSING:
                    continue
                setattr(main, name, value)
