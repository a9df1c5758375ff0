"""Caches keyed by objects' identity that forget an entry when its object is collected.

A plain ``dict`` keyed by ``id(obj)`` grows for ever, and worse, answers for a new object
that happens to get a collected one's id. Here each entry is dropped by a ``weakref.finalize``
on the objects of its key, so an id is never found again once its object is gone.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class IdentityCache(Generic[V]):
    """``get(objs, make, extra)``: the value made once for these very objects (and ``extra``)."""

    def __init__(self) -> None:
        self._values: dict[tuple[Hashable, ...], V] = {}
        self._lock = threading.Lock()

    def get(self, objs: tuple[object, ...], make: Callable[[], V], extra: Hashable = None) -> V:
        key = (*map(id, objs), extra)
        value = self._values.get(key)
        if value is not None:
            return value
        with self._lock:
            value = self._values.get(key)
            if value is None:
                value = self._values[key] = make()
                for obj in objs:
                    weakref.finalize(obj, self._values.pop, key, None)
        return value

    def __len__(self) -> int:
        return len(self._values)
