"""Errors of the pipelines engine.

```
PipelinesError
 ├─ DefinitionError(PipelinesError, ValueError)   exit 2: a dags module that cannot be a DAG
 │   ├─ CycleError                                stages that depend on each other
 │   ├─ UnknownStageError                         an upstream that does not exist
 │   ├─ DuplicateStageError                       two stages with one name
 │   └─ ArityError                                a function that cannot take its inputs
 ├─ LoadError(PipelinesError)                     exit 2: a dags module that fails to import,
 │                                                 an unknown pipeline name
 ├─ ParamError(PipelinesError, ValueError)        exit 2: a --param that fails validation
 ├─ UsageError(PipelinesError, ValueError)        exit 2: bad options (store, executor, run id)
 ├─ ConversionError(PipelinesError, TypeError)    a stage value that cannot become Arrow
 ├─ StageFailed(PipelinesError)                   exit 1: .stage .batch .item .remote_traceback
 ├─ RunLockedError(PipelinesError)                exit 2: another process is running this run
 └─ CheckpointError(PipelinesError)               a checkpoint that is missing or corrupt
```
Executor errors (``executors.errors``) are separate: executors know nothing of pipelines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class PipelinesError(Exception):
    """Base class of every error this package raises on purpose."""


class DefinitionError(PipelinesError, ValueError):
    """A pipeline definition that cannot run; raised when its dags module is imported."""


class CycleError(DefinitionError):
    """Stages that depend on each other in a circle."""


class UnknownStageError(DefinitionError):
    """A stage names an upstream stage that does not exist."""


class DuplicateStageError(DefinitionError):
    """Two stages share one name."""


class ArityError(DefinitionError):
    """A stage function whose signature cannot take the inputs it is given."""


class LoadError(PipelinesError):
    """A dags module that fails to import, or a pipeline name that is not found."""


class ParamError(PipelinesError, ValueError):
    """Pipeline parameters that fail validation."""


class UsageError(PipelinesError, ValueError):
    """Options that cannot work: an unwritable store, an unknown run, a bad flag."""


class ConversionError(PipelinesError, TypeError):
    """A value a stage returned that cannot be converted to Arrow."""


class RunLockedError(PipelinesError):
    """The run is being run by another live process."""


class CheckpointError(PipelinesError):
    """A checkpoint file that is missing, truncated, or fails its checksum."""


class StageFailed(PipelinesError):
    """A stage failed beyond its error policy.

    Attributes:
        stage: the stage's name.
        batch: the batch number, or ``None`` for whole-stage failures.
        item: the item's index within its batch, or ``None``.
        position: the item's index in the whole source, where it has one.
        error_type: the name of the exception's type (``"ValueError"``).
        remote_traceback: the worker's formatted traceback, when there is one.
    """

    def __init__(
        self,
        stage: str,
        message: str,
        *,
        batch: int | None = None,
        item: int | None = None,
        error_type: str = "",
        remote_traceback: str = "",
        position: int | None = None,
    ) -> None:
        self.stage = stage
        self.batch = batch
        self.item = item
        self.position = position
        self.error_type = error_type
        self.message = message
        self.remote_traceback = remote_traceback
        where = f"stage {stage!r}"
        if position is not None:
            where += f", item {position:,}"
        else:
            if batch is not None:
                where += f", batch {batch}"
            if item is not None:
                where += f", item {item}"
        cause = f"{error_type}: {message}" if error_type else message
        super().__init__(f"{where}: {cause}")

    def __reduce__(self) -> tuple[Callable[..., StageFailed], tuple[Any, ...]]:
        return (
            _rebuild_stage_failed,
            (self.stage, self.message, self.batch, self.item, self.error_type, self.remote_traceback, self.position),
        )


def _rebuild_stage_failed(
    stage: str,
    message: str,
    batch: int | None,
    item: int | None,
    error_type: str,
    remote_traceback: str,
    position: int | None = None,
) -> StageFailed:
    return StageFailed(
        stage,
        message,
        batch=batch,
        item=item,
        error_type=error_type,
        remote_traceback=remote_traceback,
        position=position,
    )
