"""pipelines: declarative data pipelines that go parallel and never lose finished work.

Define a ``Pipeline`` in a module under ``dags/``; run it with ``python -m pipelines run NAME``
or ``pipelines.run(pipeline)``. See ``docs/architecture.md`` for how data flows.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .errors import (
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
from .resources import uses

if TYPE_CHECKING:
    from .model import Pipeline, Stage
    from .hooks import RunObserver, StageStats
    from .plan import RunOptions
    from .result import RunResult, RunStatus
    from .api import resume, run
    from .past import load
    from .store import Store

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())  # a library: the application decides what is shown

_LAZY = {
    "Pipeline": ("pipelines.model", "Pipeline"),
    "Stage": ("pipelines.model", "Stage"),
    "run": ("pipelines.api", "run"),
    "resume": ("pipelines.api", "resume"),
    "load": ("pipelines.past", "load"),
    "RunResult": ("pipelines.result", "RunResult"),
    "RunStatus": ("pipelines.result", "RunStatus"),
    "RunOptions": ("pipelines.plan", "RunOptions"),
    "RunObserver": ("pipelines.hooks", "RunObserver"),
    "StageStats": ("pipelines.hooks", "StageStats"),
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
