"""``IdentityCache``: one value per live object, forgotten when the object is collected, so a
new object that gets a collected one's ``id()`` never finds its value."""

from __future__ import annotations

import gc

from pipelines import Pipeline
from pipelines._engine.identity import IdentityCache


class Thing:
    pass


def test_one_value_per_object_and_extra() -> None:
    cache: IdentityCache[list[int]] = IdentityCache()
    a, b = Thing(), Thing()
    first = cache.get((a,), list)
    assert cache.get((a,), list) is first
    assert cache.get((b,), list) is not first
    assert cache.get((a,), list, extra="other") is not first
    assert cache.get((a, b), list) is not cache.get((b, a), list)


def test_an_entry_goes_with_its_object_and_a_reused_id_starts_afresh() -> None:
    cache: IdentityCache[object] = IdentityCache()
    made = 0

    def make() -> object:
        nonlocal made
        made += 1
        return object()

    for _ in range(200):  # CPython hands a freed object's address to the next one of its size
        thing = Thing()
        cache.get((thing,), make)
        del thing
        gc.collect()
    assert made == 200  # never a stale hit
    assert len(cache) == 0


def test_stages_and_pipelines_can_be_keys() -> None:
    """The engine keys its per-process caches by stage and pipeline: both take weak references."""
    pipeline = Pipeline("identity_keys")

    @pipeline.source
    def numbers() -> list[int]:
        return [1]

    cache: IdentityCache[str] = IdentityCache()
    assert cache.get((pipeline, pipeline["numbers"]), lambda: "x") == "x"
    assert len(cache) == 1
