"""The public names of ``pipelines`` and ``executors``, pinned (httpx ``test_exported_members``).

A name added to or removed from ``__all__`` is an API change: update the list here on purpose.
"""

from __future__ import annotations

import executors
import pipelines

PIPELINES_API = [
    "ArityError",
    "CheckpointError",
    "ConversionError",
    "CycleError",
    "DefinitionError",
    "DuplicateStageError",
    "LoadError",
    "ParamError",
    "Pipeline",
    "PipelinesError",
    "RunLockedError",
    "RunObserver",
    "RunOptions",
    "RunResult",
    "RunStatus",
    "Stage",
    "StageFailed",
    "StageStats",
    "Store",
    "UnknownStageError",
    "UsageError",
    "load",
    "resume",
    "run",
    "uses",
]

EXECUTORS_API = [
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


def test_pipelines_all_is_pinned() -> None:
    assert sorted(pipelines.__all__) == PIPELINES_API
    assert len(set(pipelines.__all__)) == len(pipelines.__all__)


def test_executors_all_is_pinned() -> None:
    assert sorted(executors.__all__) == EXECUTORS_API
    assert len(set(executors.__all__)) == len(executors.__all__)


def test_every_pipelines_name_resolves() -> None:
    for name in pipelines.__all__:
        value = getattr(pipelines, name)
        assert value is not None, name
        module = getattr(value, "__module__", "")
        assert module.startswith("pipelines."), f"{name} comes from {module}"


def test_every_executors_name_resolves() -> None:
    for name in executors.__all__:
        value = getattr(executors, name)
        assert getattr(value, "__module__", "").startswith("executors."), name


def test_lazy_names_are_the_engine_objects() -> None:
    from pipelines._engine.plan import RunOptions
    from pipelines.api import resume, run
    from pipelines.define.model import Pipeline, Stage
    from pipelines.store import Store

    assert (pipelines.Pipeline, pipelines.Stage, pipelines.RunOptions, pipelines.Store) == (
        Pipeline,
        Stage,
        RunOptions,
        Store,
    )
    assert (pipelines.run, pipelines.resume) == (run, resume)


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        pipelines.Pipline  # noqa: B018
    except AttributeError as exc:
        assert "Pipline" in str(exc)
    else:
        raise AssertionError("pipelines.Pipline resolved")


def test_errors_form_one_tree() -> None:
    for name in pipelines.__all__:
        value = getattr(pipelines, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, pipelines.PipelinesError), name
    for name in executors.__all__:
        value = getattr(executors, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, executors.ExecutorError), name
    assert not issubclass(executors.ExecutorError, pipelines.PipelinesError)  # executors know nothing of pipelines


def test_version() -> None:
    assert isinstance(pipelines.__version__, str) and pipelines.__version__.count(".") >= 1
