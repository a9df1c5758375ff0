"""Pipelines and stages as pure data: what to run, never how.

A ``Pipeline`` collects ``Stage`` specs through its decorators and validates each one as it
is added (names, arities, output types), so a broken dags module fails on import with the
stage's name in the message. Links to stages defined later (by name) are checked, with cycle
detection, by ``Pipeline.validate()``, which the loader calls right after importing a module.

Granularities:
    source   a function of ``params`` that yields items (or returns a table or sequence)
    item     one item in, one value out                 (``pipeline.map``)
    flat     one item in, zero or more values out        (``pipeline.flat_map``)
    batch    one batch in as Arrow or pandas, a table out (``pipeline.batch``)
    all      every batch of each input at once           (``pipeline.reduce``)

This module imports neither executors nor the store.
"""

from __future__ import annotations

import graphlib
import inspect
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from pipelines.define.checks import (
    check_executor_name,
    check_name_length,
    check_outputs,
    check_rate,
    did_you_mean,
    is_int,
    is_number,
)
from pipelines.define.resources import resources_of
from pipelines.define.signature import Granularity, bind, output_type
from pipelines.errors import CycleError, DefinitionError, DuplicateStageError, UnknownStageError

Kind = Literal["cpu", "io"]
OnError = Literal["fail", "skip", "collect"]
Reuse = Literal["auto", "never"]
REUSE = ("auto", "never")
KINDS = ("cpu", "io")
ON_ERROR = ("fail", "skip", "collect")
ITEMWISE = ("map", "flat_map")


@dataclass(frozen=True, slots=True, weakref_slot=True)  # weakly referenced: per-process caches
class Stage:
    """One step of a pipeline. Build stages with ``Pipeline`` methods, not directly.

    Attributes:
        name: unique within the pipeline; names the stage in logs, files and dashboards.
        fn: the user's function, unchanged.
        granularity: ``source``, ``map``, ``flat_map``, ``batch`` or ``reduce``: the decorator that declared it.
        kind: ``cpu`` or ``io``; decides the default executor.
        is_async: the function is ``async def`` (or an async generator).
        inputs: upstream stage names whose batches feed this stage.
        side: stages whose whole output is passed as a table keyword argument.
        retries: extra attempts per item (per batch for batch stages) after a failure.
        timeout: seconds per item (async) or per batch (processes) before giving up.
        concurrency: items in flight at once, for IO stages.
        on_error: ``fail`` (stop the run), ``skip`` (record and go on) or ``collect``
            (go on, and keep failed items in the run's dead-letter table).
        executor: a backend name that overrides the planner's choice.
        batch_size: a source's items per checkpointed batch; ``None`` cuts batches by content.
        task_size: items per task, for the stages after the source; ``None`` lets the
            planner size tasks from measured cost.
        kwargs: fixed keyword arguments for the function.
        resources: per-worker resources injected by parameter name.
        output_type: the element type the stage returns (from its annotation), or ``None``.
        input_args: the function's parameter names that receive the inputs, in input order.
        takes_params: the function has a ``params`` parameter.
        table_format: ``arrow``, ``pandas`` or ``list``, what batch and reduce stages receive
            (from their input parameters' annotations: ``pa.Table``, ``pd.DataFrame``, ``list[T]``).
        rate: an items-per-second cap such as ``"50/s"``, or ``None``.
        retry_on: a predicate on exceptions that may be retried, or ``None`` for the default.
        reuse: ``auto`` (reuse what is stored under a batch's key) or ``never``: the stage has
            side effects, so a new run computes it again (a resume keeps the run's own work).
        outputs: files the stage makes, that must all still exist for its stored results
            to be reused: paths (relative to the working directory), or a function of the
            params that returns them.
    """

    name: str
    fn: Callable[..., Any]
    granularity: Granularity
    kind: Kind
    is_async: bool
    inputs: tuple[str, ...] = ()
    side: tuple[str, ...] = ()
    retries: int = 0
    timeout: float | None = None
    concurrency: int | None = None
    on_error: OnError = "fail"
    executor: str | None = None
    batch_size: int | None = None
    task_size: int | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    resources: Mapping[str, Callable[[], Any]] = field(default_factory=dict)
    output_type: Any = None
    input_args: tuple[str, ...] = ()
    takes_params: bool = False
    table_format: Literal["arrow", "pandas", "list"] = "arrow"
    rate: str | None = None
    retry_on: Callable[[BaseException], bool] | None = None
    reuse: Reuse = "auto"
    outputs: tuple[str, ...] | Callable[..., Iterable[Any]] = ()
    doc: str = ""

    @property
    def itemwise(self) -> bool:
        """Map and flat-map stages: failures, reuse and resume work per item."""
        return self.granularity in ITEMWISE

    @property
    def keeps_item_ids(self) -> bool:
        """True when output row ``i`` is the result of input item ``i`` (sources and maps)."""
        return self.granularity in ("source", "map")

    @property
    def upstream(self) -> tuple[str, ...]:
        return self.inputs + self.side


class Pipeline:
    """A named DAG of stages with typed parameters.

    Example:
        >>> import pyarrow as pa, pyarrow.compute as pc
        >>> from pipelines import Pipeline
        >>> pipeline = Pipeline("squares")
        >>> @pipeline.source
        ... def numbers() -> Iterator[int]:
        ...     yield from range(10)
        >>> @pipeline.map(over=numbers, kind="cpu")
        ... def square(x: int) -> int:
        ...     return x * x
        >>> @pipeline.reduce(inputs=[square])
        ... def total(squares: pa.Table) -> pa.Table:
        ...     return pa.table({"total": [pc.sum(squares["square"]).as_py()]})
        >>> result = pipeline.run(executor="threads", store=tmp_path)   # threads: in a script, omit it
        >>> result.table("total").to_pylist()
        [{'total': 285}]
    """

    def __init__(
        self,
        name: str,
        *,
        params: type[BaseModel] | None = None,
        description: str | None = None,
        module: str | None = None,
    ) -> None:
        if not name.isidentifier():
            raise DefinitionError(f"pipeline name {name!r} must be a Python identifier")
        check_name_length(name, "pipeline name")
        if params is not None and not (isinstance(params, type) and issubclass(params, BaseModel)):
            raise DefinitionError(f"pipeline {name!r}: params must be a pydantic BaseModel class, not {params!r}")
        self.name = name
        self.params_model = params
        self.module = module or sys._getframe(1).f_globals.get("__name__", "__main__")
        if description is None:  # default: the dags module's docstring
            description = getattr(sys.modules.get(self.module), "__doc__", None)
        self.description = (description or "").strip()
        self._stages: dict[str, Stage] = {}
        self._by_fn: dict[int, list[str]] = {}
        self._validated = False
        self.lifespan: Callable[..., Any] | None = None

    # -- reading ------------------------------------------------------------------
    @property
    def stages(self) -> dict[str, Stage]:
        """Stages by name, in definition order."""
        return dict(self._stages)

    def __getitem__(self, name: str) -> Stage:
        try:
            return self._stages[name]
        except KeyError:
            raise UnknownStageError(
                did_you_mean(f"pipeline {self.name!r} has no stage {name!r}", name, self._stages)
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._stages

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r} stages={list(self._stages)}>"

    # -- running ----------------------------------------------------------------------
    def run(self, params: Any = None, *, executor: str | None = None, store: Any = None, **options: Any) -> Any:
        """Run the pipeline and return its ``RunResult`` (for notebooks and tests).

        The same as ``pipelines.run(self, ...)``; ``result.table("stage")`` and
        ``result.to_pandas("stage")`` give any stage's output, ``result.run_id`` the run.

        Example: the one on ``Pipeline`` ends with a run.
        """
        from pipelines.api import run

        return run(self, params, executor=executor, store=store, **options)

    def downstream(self, name: str) -> list[str]:
        """Stages that read ``name``'s output, directly."""
        return [s.name for s in self._stages.values() if name in s.upstream]

    def order(self) -> list[str]:
        """Stage names in a topological order (definition order where free)."""
        self.validate()
        sorter = graphlib.TopologicalSorter({s.name: s.upstream for s in self._stages.values()})
        rank = {name: i for i, name in enumerate(self._stages)}
        sorter.prepare()
        out: list[str] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=rank.__getitem__)
            out.extend(ready)
            sorter.done(*ready)
        return out

    def description_line(self) -> str:
        """The first line of the pipeline's description."""
        return self.description.splitlines()[0] if self.description else ""

    # -- parameters -----------------------------------------------------------------
    def parse_params(self, values: Mapping[str, Any] | BaseModel | None = None) -> BaseModel | None:
        """Validate parameters (``--param key=value`` strings, a dict, or a model instance).

        Raises:
            ParamError: an unknown key or a value that fails validation, naming the key.
        """
        from pipelines.define.params import parse_params

        return parse_params(self.name, self.params_model, values)

    # -- defining -------------------------------------------------------------------
    def set_lifespan(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Declare a context manager the driver holds open around every run (a decorator).

        It takes ``params`` (optional) and may yield a mapping of environment variables that
        are set for the run, so workers started by the run see them. Use it for what a run
        needs but its results must not depend on, such as a local server's port.

        Example:
            >>> import contextlib, os
            >>> pipeline = Pipeline("greeting")
            >>> @pipeline.set_lifespan
            ... @contextlib.contextmanager
            ... def serve(params):
            ...     yield {"GREETING": "hello"}       # say, the URL of a server started here
            >>> @pipeline.source
            ... def words():
            ...     yield os.environ["GREETING"]
            >>> pipeline.run(executor="threads", store=tmp_path).table("words").to_pylist()
            [{'words': 'hello'}]
        """
        if not callable(fn):
            raise DefinitionError(f"pipeline {self.name!r}: lifespan must be callable, got {fn!r}")
        self.lifespan = fn
        return fn

    def source(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        kind: Kind = "io",
        batch_size: int | None = None,
        executor: str | None = None,
    ) -> Any:
        """Declare the function that yields the pipeline's items.

        The function takes ``params`` (optional) and yields items, returns an iterable, or
        returns a whole Arrow table / pandas DataFrame / sequence that is cut into batches.
        """

        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            self._add(
                f, granularity="source", name=name, kind=kind, inputs=(), batch_size=batch_size, executor=executor
            )
            return f

        return add(fn) if fn is not None else add

    def map(self, fn: Callable[..., Any] | None = None, *, over: Any, **options: Any) -> Any:
        """Apply ``fn`` to every item of ``over``; one value out per item in.

        Used as ``pipeline.map(fn, over=...)`` it returns the ``Stage``; used as a decorator,
        ``@pipeline.map(over=...)``, it returns the function unchanged.
        Options: name, kind, concurrency, retries, timeout, on_error, executor, task_size,
        side, resources, rate, retry_on, reuse, outputs; other keywords are fixed arguments of ``fn``.
        """
        return self._declare(fn, "map", (over,), options)

    def flat_map(self, fn: Callable[..., Any] | None = None, *, over: Any, **options: Any) -> Any:
        """Apply ``fn`` to every item of ``over``; it yields zero or more values per item."""
        return self._declare(fn, "flat_map", (over,), options)

    def batch(self, fn: Callable[..., Any] | None = None, *, over: Any, **options: Any) -> Any:
        """Apply ``fn`` to each batch of ``over`` as an Arrow table (or a DataFrame, by annotation)."""
        return self._declare(fn, "batch", (over,), options)

    def reduce(self, fn: Callable[..., Any] | None = None, *, inputs: Iterable[Any], **options: Any) -> Any:
        """Call ``fn`` once with each input's whole output as a table (fan-in)."""
        return self._declare(fn, "reduce", tuple(inputs), options)

    def _declare(
        self, fn: Callable[..., Any] | None, granularity: Granularity, inputs: tuple[Any, ...], options: dict[str, Any]
    ) -> Any:
        if "batch_size" in options:  # its former name, when it shared the word with a source's batches
            warnings.warn(
                "batch_size= on a map, flat_map, batch or reduce stage is deprecated: it sizes tasks, use task_size=",
                DeprecationWarning,
                stacklevel=3,  # the user's pipeline.map(...) line, or its decorator
            )
            if "task_size" in options:
                raise DefinitionError(f"pipeline {self.name!r}: give task_size= only (batch_size= is its former name)")
            options = {**options, "task_size": options["batch_size"]}
            del options["batch_size"]
        if fn is not None:
            return self._add(fn, granularity=granularity, inputs=inputs, **options)

        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            self._add(f, granularity=granularity, inputs=inputs, **options)
            return f

        return add

    # stage options, each with what its value looks like (to suggest one for a misspelt keyword)
    _OPTIONS: Mapping[str, Callable[[Any], bool]] = {
        "name": lambda v: isinstance(v, str),
        "kind": lambda v: isinstance(v, str),
        "concurrency": lambda v: is_int(v),
        "retries": lambda v: is_int(v),
        "timeout": lambda v: is_number(v),
        "on_error": lambda v: isinstance(v, str),
        "executor": lambda v: isinstance(v, str),
        "task_size": lambda v: is_int(v),
        "side": lambda v: isinstance(v, (list, tuple)),
        "resources": lambda v: isinstance(v, Mapping),
        "rate": lambda v: isinstance(v, str),
        "retry_on": callable,
        "reuse": lambda v: isinstance(v, str),
        "outputs": lambda v: callable(v) or isinstance(v, (list, tuple, str)),
    }

    def _add(
        self,
        fn: Callable[..., Any],
        *,
        granularity: Granularity,
        inputs: tuple[Any, ...],
        name: str | None = None,
        kind: Kind | None = None,
        concurrency: int | None = None,
        retries: int = 0,
        timeout: float | None = None,
        on_error: OnError = "fail",
        executor: str | None = None,
        batch_size: int | None = None,
        task_size: int | None = None,
        side: Iterable[Any] = (),
        resources: Mapping[str, Callable[[], Any]] | None = None,
        rate: str | None = None,
        retry_on: Callable[[BaseException], bool] | None = None,
        reuse: Reuse = "auto",
        outputs: Iterable[Any] | Callable[..., Iterable[Any]] = (),
        **kwargs: Any,
    ) -> Stage:
        if not callable(fn):
            raise DefinitionError(f"pipeline {self.name!r}: a stage needs a function, got {fn!r}")
        stage_name = name or str(getattr(fn, "__name__", ""))
        if not stage_name.isidentifier():
            raise DefinitionError(f"pipeline {self.name!r}: stage function {fn!r} needs name=... (got {stage_name!r})")
        check_name_length(stage_name, f"pipeline {self.name!r}: stage name")
        where = f"stage {stage_name!r}"
        if stage_name in self._stages:
            raise DuplicateStageError(f"{where}: a stage of that name is already defined in pipeline {self.name!r}")
        is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        kind = kind or ("io" if is_async else "cpu")
        if kind not in KINDS:
            raise DefinitionError(f"{where}: kind must be one of {KINDS}, not {kind!r}")
        if on_error not in ON_ERROR:
            raise DefinitionError(f"{where}: on_error must be one of {ON_ERROR}, not {on_error!r}")
        for label, value in (
            ("retries", retries),
            ("concurrency", concurrency),
            ("batch_size", batch_size),
            ("task_size", task_size),
        ):
            if value is not None and (not is_int(value) or value < (0 if label == "retries" else 1)):
                least = "non-negative" if label == "retries" else "positive"
                raise DefinitionError(f"{where}: {label} must be a {least} integer, not {value!r}")
        if timeout is not None and not (is_number(timeout) and timeout > 0):
            raise DefinitionError(f"{where}: timeout must be a positive number of seconds, not {timeout!r}")
        if reuse not in REUSE:
            raise DefinitionError(f"{where}: reuse must be one of {REUSE}, not {reuse!r}")
        outputs = check_outputs(outputs, where)
        if rate is not None:
            check_rate(rate, where)
        if executor is not None:
            check_executor_name(executor, where)
        if granularity in ("source",) and inputs:
            raise DefinitionError(f"{where}: a source has no inputs")
        if granularity != "source" and not inputs:
            raise DefinitionError(f"{where}: needs at least one input stage")
        input_names = tuple(self._ref(x, where) for x in inputs)
        side_names = tuple(self._ref(x, where) for x in side)
        all_resources = {**resources_of(fn), **(resources or {})}
        input_args, takes_params, table_format = bind(
            fn, where, granularity, input_names, side_names, all_resources, kwargs, self.params_model, self._OPTIONS
        )
        returns = output_type(fn, granularity, where)
        stage = Stage(
            name=stage_name,
            fn=fn,
            granularity=granularity,
            kind=kind,
            is_async=is_async,
            inputs=input_names,
            side=side_names,
            retries=retries,
            timeout=timeout,
            concurrency=concurrency,
            on_error=on_error,
            executor=executor,
            batch_size=batch_size,
            task_size=task_size,
            kwargs=dict(kwargs),
            resources=all_resources,
            output_type=returns,
            input_args=input_args,
            takes_params=takes_params,
            table_format=table_format,
            rate=rate,
            retry_on=retry_on,
            reuse=reuse,
            outputs=outputs,
            doc=(inspect.getdoc(fn) or "").split("\n")[0],
        )
        self._stages[stage_name] = stage
        self._by_fn.setdefault(id(fn), []).append(stage_name)
        self._validated = False
        return stage

    def _ref(self, ref: Any, where: str) -> str:
        """A stage name from a Stage, a registered function, or a name."""
        if isinstance(ref, Stage):
            if self._stages.get(ref.name) is not ref:
                raise UnknownStageError(f"{where}: input {ref.name!r} is a stage of another pipeline")
            return ref.name
        if isinstance(ref, str):
            return ref  # may be defined later; validate() checks it
        if callable(ref):
            names = self._by_fn.get(id(ref), [])
            if len(names) == 1:
                return names[0]
            label = getattr(ref, "__name__", repr(ref))
            if not names:
                raise UnknownStageError(f"{where}: input {label!r} is not a stage of pipeline {self.name!r}")
            raise DefinitionError(f"{where}: function {label!r} is used by stages {names}; name the input instead")
        raise DefinitionError(f"{where}: an input must be a stage, a stage function or a stage name, not {ref!r}")

    def validate(self) -> Pipeline:
        """Check links between stages: unknown names and cycles. Idempotent and cheap."""
        if self._validated:
            return self
        if not any(s.granularity == "source" for s in self._stages.values()):
            raise DefinitionError(f"pipeline {self.name!r} has no source stage (decorate one with @pipeline.source)")
        for stage in self._stages.values():
            for up in stage.upstream:
                if up not in self._stages:
                    raise UnknownStageError(
                        did_you_mean(f"stage {stage.name!r}: unknown input stage {up!r}", up, self._stages)
                    )
                if up == stage.name:
                    raise CycleError(f"stage {stage.name!r} reads its own output")
        sorter = graphlib.TopologicalSorter({s.name: s.upstream for s in self._stages.values()})
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            raise CycleError(f"stage {cycle[0]!r} is part of a cycle: {' -> '.join(cycle)}") from None
        self._validated = True
        return self
