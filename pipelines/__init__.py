"""pipelines: declarative data pipelines that go parallel and never lose finished work.

Define a ``Pipeline`` in a module under ``dags/``; run it with ``python -m pipelines run NAME``
or ``pipelines.run(pipeline)``. See ``docs/architecture.md`` for how data flows.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipelines.define.resources import uses
from pipelines.errors import (
    ArityError,
    CheckpointError,
    ConversionError,
    CycleError,
    DefinitionError,
    DuplicateStageError,
    LoadError,
    ParamError,
    PipelinesError,
    RunLockedError,
    StageFailed,
    UnknownStageError,
    UsageError,
)

if TYPE_CHECKING:
    from pipelines._engine.plan import RunOptions
    from pipelines.api import resume, run
    from pipelines.define.model import Pipeline, Stage
    from pipelines.observe.hooks import RunObserver, StageStats
    from pipelines.observe.result import RunResult, RunStatus
    from pipelines.store import Store
    from pipelines.store.past import load

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())  # a library: the application decides what is shown

_LAZY = {
    "Pipeline": ("pipelines.define.model", "Pipeline"),
    "Stage": ("pipelines.define.model", "Stage"),
    "run": ("pipelines.api", "run"),
    "resume": ("pipelines.api", "resume"),
    "load": ("pipelines.store.past", "load"),
    "RunResult": ("pipelines.observe.result", "RunResult"),
    "RunStatus": ("pipelines.observe.result", "RunStatus"),
    "RunOptions": ("pipelines._engine.plan", "RunOptions"),
    "RunObserver": ("pipelines.observe.hooks", "RunObserver"),
    "StageStats": ("pipelines.observe.hooks", "StageStats"),
    "Store": ("pipelines.store", "Store"),
}


def __getattr__(name: str) -> Any:
    """Engine parts load on first use, so ``import pipelines`` (and ``--help``) stays fast."""
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'pipelines' has no attribute {name!r}") from None
    import importlib

    return getattr(importlib.import_module(module_name), attr)


__all__ = [
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
