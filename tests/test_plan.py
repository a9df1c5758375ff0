"""``plan()`` is a pure function: whole plans compared, like dask's ``start_state`` tests.

Nothing here starts an executor. ``max_workers`` is always given so that plans do not
depend on the machine's CPU count.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines._engine.batching import TaskSizer
from pipelines._engine.plan import IN_PROCESS, PROCESS_PRELOAD, ExecutorSpec, Plan, RunOptions, StagePlan, plan
from pipelines.define.model import Pipeline


def mixed() -> Pipeline:
    """One stage of every kind: cpu, io with and without concurrency, async, and a pinned reduce."""
    pipeline = Pipeline("mixed")

    @pipeline.source
    def numbers() -> Iterator[int]:
        yield from range(10)

    @pipeline.map(over=numbers, kind="cpu")
    def crunch(x: int) -> int:
        return x

    @pipeline.map(over=numbers, kind="io", concurrency=4)
    def fetch(x: int) -> int:
        return x

    @pipeline.map(over=crunch)
    async def download(x: int) -> int:
        return x

    @pipeline.map(over=download, kind="io")
    def save(x: int) -> int:
        return x

    @pipeline.reduce(inputs=[save, fetch], executor="inline")
    def summary(save: pa.Table, fetch: pa.Table) -> pa.Table:
        return save

    return pipeline


DRIVER = StagePlan("numbers", None, "driver", 1, None, None, 0.0, 0)
PROCESSES = ExecutorSpec("processes", "processes", {"max_workers": 2, "preload": PROCESS_PRELOAD}, 4)
INLINE = ExecutorSpec("inline", "inline", {}, 1)


def test_default_mapping_by_kind() -> None:
    assert plan(mixed(), RunOptions(max_workers=2)) == Plan(
        order=("numbers", "crunch", "fetch", "download", "save", "summary"),
        stages={
            "numbers": DRIVER,
            "crunch": StagePlan("crunch", "processes", "processes", 4, None, None, 0.1, 4),
            "fetch": StagePlan("fetch", "threads", "threads", 4, None, None, 0.05, 1),
            "download": StagePlan("download", "asyncio", "asyncio", 64, 256, None, 0.5, 32, 32),
            "save": StagePlan("save", "threads", "threads", 8, None, None, 0.05, 1),
            "summary": StagePlan("summary", "inline", "inline", 1, None, None, 0.1, 4),
        },
        executors={
            "processes": PROCESSES,
            "threads": ExecutorSpec("threads", "threads", {"max_workers": 12}, 12),  # shared: 4 + 8
            "asyncio": ExecutorSpec("asyncio", "asyncio", {}, 256),
            "inline": INLINE,
        },
    )


def test_cpu_stages_share_one_process_pool() -> None:
    pipeline = Pipeline("cpus")

    @pipeline.source
    def numbers() -> Iterator[int]:
        yield 1

    @pipeline.map(over=numbers)
    def a(x: int) -> int:
        return x

    @pipeline.map(over=a, task_size=100)
    def b(x: int) -> int:
        return x

    assert plan(pipeline, RunOptions(max_workers=3)) == Plan(
        order=("numbers", "a", "b"),
        stages={
            "numbers": DRIVER,
            "a": StagePlan("a", "processes", "processes", 6, None, None, 0.1, 4),
            "b": StagePlan("b", "processes", "processes", 6, None, 100, 0.1, 4),
        },
        executors={
            "processes": ExecutorSpec("processes", "processes", {"max_workers": 3, "preload": PROCESS_PRELOAD}, 6)
        },
    )


def test_async_concurrency_sizes_in_flight_items() -> None:
    pipeline = Pipeline("fetcher")

    @pipeline.source
    def urls() -> Iterator[str]:
        yield "u"

    @pipeline.map(over=urls, concurrency=10)
    async def get(url: str) -> str:
        return url

    assert plan(pipeline, RunOptions(max_workers=2)).stages["get"] == StagePlan(
        "get", "asyncio", "asyncio", 64, 40, None, 0.5, 5, 5
    )


def test_async_stage_on_threads_is_sized_by_its_concurrency() -> None:
    """Each thread runs its own event loop: the stage's items in flight, not its tasks, are capped."""
    pipeline = Pipeline("fetcher")

    @pipeline.source
    def urls() -> Iterator[str]:
        yield "u"

    @pipeline.map(over=urls, concurrency=10)
    async def get(url: str) -> str:
        return url

    @pipeline.map(over=get)
    async def head(url: str) -> str:
        return url

    the_plan = plan(pipeline, RunOptions(executor="threads", max_workers=2))
    assert the_plan.stages["get"] == StagePlan("get", "threads:get", "threads", 10, 10, None, 0.5, 5)
    assert the_plan.executors["threads:get"] == ExecutorSpec("threads:get", "threads", {"max_workers": 10}, 10)
    assert the_plan.stages["head"] == StagePlan("head", "threads:head", "threads", 64, 64, None, 0.5, 32)
    assert the_plan.executors["threads:head"] == ExecutorSpec("threads:head", "threads", {"max_workers": 64}, 64)


def placement(the_plan: Plan) -> dict[str, tuple[str | None, str]]:
    return {name: (sp.slot, sp.backend) for name, sp in the_plan.stages.items()}


def test_run_option_moves_every_stage_but_pinned_ones() -> None:
    the_plan = plan(mixed(), RunOptions(executor="threads", max_workers=2))
    assert placement(the_plan) == {
        "numbers": (None, "driver"),
        "crunch": ("threads", "threads"),
        "fetch": ("threads", "threads"),
        "download": ("threads:download", "threads"),  # async: a loop per thread, in a pool of its own
        "save": ("threads", "threads"),
        "summary": ("inline", "inline"),  # its own executor= wins over the run's option
    }
    assert the_plan.executors["threads"].options == {"max_workers": 8 + 4 + 8}  # one pool, each stage's share
    assert [the_plan.stages[n].max_tasks for n in ("crunch", "fetch", "save")] == [8, 4, 8]
    assert set(the_plan.executors) == {"threads", "threads:download", "inline"}


@pytest.mark.parametrize("backend", ["inline", "processes", "asyncio", "joblib"])
def test_run_option_for_each_local_backend(backend: str) -> None:
    the_plan = plan(mixed(), RunOptions(executor=backend, max_workers=2))
    assert {sp.backend for name, sp in the_plan.stages.items() if name not in ("numbers", "summary")} == {backend}
    assert the_plan.stages["numbers"].backend == "driver"
    assert the_plan.stages["summary"].backend == "inline"


def test_stage_executor_wins_over_kind_and_run_option() -> None:
    pipeline = Pipeline("pinned")

    @pipeline.source
    def numbers() -> Iterator[int]:
        yield 1

    @pipeline.map(over=numbers, kind="cpu", executor="threads")
    def a(x: int) -> int:
        return x

    @pipeline.map(over=numbers, kind="io", executor="processes")
    def b(x: int) -> int:
        return x

    @pipeline.map(over=numbers, executor="inline")
    async def c(x: int) -> int:
        return x

    expected = {
        "numbers": (None, "driver"),
        "a": ("threads", "threads"),
        "b": ("processes", "processes"),
        "c": ("inline", "inline"),
    }
    assert placement(plan(pipeline, RunOptions(max_workers=2))) == expected
    assert placement(plan(pipeline, RunOptions(executor="asyncio", max_workers=2))) == expected


def test_sources_stay_on_the_driver_even_when_pinned() -> None:
    pipeline = Pipeline("src")

    @pipeline.source(executor="processes", batch_size=7)
    def numbers() -> Iterator[int]:
        yield 1

    assert plan(pipeline, RunOptions(executor="dask")).stages["numbers"] == StagePlan(
        "numbers", None, "driver", 1, None, 7, 0.0, 0
    )


def test_cluster_options_reach_the_executor() -> None:
    options = RunOptions(
        executor="dask", address="tcp://10.0.0.1:8786", max_workers=2, dashboard_address=":0", keep_cluster=True
    )
    the_plan = plan(mixed(), options)
    assert the_plan.executors == {
        "dask": ExecutorSpec(
            "dask",
            "dask",
            {"max_workers": 2, "address": "tcp://10.0.0.1:8786", "dashboard_address": ":0", "keep_cluster": True},
            4,
        ),
        "inline": INLINE,
    }
    assert {sp.slot for sp in the_plan.stages.values()} == {None, "dask", "inline"}


def test_ray_gets_the_address_but_no_dask_options() -> None:
    options = RunOptions(
        executor="ray", address="ray://h:10001", max_workers=2, dashboard_address=":0", keep_cluster=True
    )
    assert plan(mixed(), options).executors["ray"] == ExecutorSpec(
        "ray", "ray", {"max_workers": 2, "address": "ray://h:10001"}, 4
    )


def test_start_method_reaches_the_process_pool() -> None:
    spec = plan(mixed(), RunOptions(max_workers=2, start_method="spawn")).executors["processes"]
    assert spec.options == {"max_workers": 2, "preload": PROCESS_PRELOAD, "start_method": "spawn"}


def test_plan_is_pure() -> None:
    pipeline = mixed()
    first = plan(pipeline, RunOptions(max_workers=2))
    assert plan(pipeline, RunOptions(max_workers=2)) == first
    assert first.order == tuple(pipeline.order())
    with pytest.raises(AttributeError):
        first.order = ()  # type: ignore[misc]


def test_describe_is_what_a_resume_needs() -> None:
    options = RunOptions(executor="dask", address="tcp://h:1", max_workers=3, start_method="spawn", fresh=True)
    assert options.describe() == {"executor": "dask", "address": "tcp://h:1", "max_workers": 3, "start_method": "spawn"}


@pytest.mark.parametrize("backend", ["inline", "threads", "asyncio", "processes", "joblib"])
def test_the_plan_knows_which_backends_run_in_process(backend: str) -> None:
    """The plan decides before any executor exists; the backend's capabilities must agree."""
    import executors

    if backend == "joblib":
        pytest.importorskip("joblib")
    assert executors.get_executor(backend).capabilities.in_process == (backend in IN_PROCESS)


def test_task_size_fixes_the_items_of_every_task() -> None:
    pipeline = Pipeline("sized")

    @pipeline.source
    def numbers() -> Iterator[int]:
        yield 1

    @pipeline.flat_map(over=numbers, task_size=3)
    def twice(x: int) -> Iterator[int]:
        yield from (x, x)

    sizer = TaskSizer(fixed=plan(pipeline).stages["twice"].task_size)
    sizer.observe(3, 100.0)  # a fixed size does not follow measured cost
    assert [sizer.size(1000, final=False), sizer.size(1000, final=True)] == [3, 3]
    assert plan(pipeline).stages["numbers"].task_size is None  # the source's batches stay cut by content


def test_batch_size_on_a_map_is_its_former_name_for_task_size(tmp_path) -> None:
    pipeline = Pipeline("former")

    @pipeline.source
    def numbers() -> Iterator[int]:
        yield from range(10)

    with pytest.warns(DeprecationWarning, match="use task_size=") as caught:

        @pipeline.map(over=numbers, batch_size=4)
        def double(x: int) -> int:
            return 2 * x

    line = next(n for n, text in enumerate(Path(__file__).read_text().splitlines(), 1) if "batch_size=4)" in text)
    assert (caught[0].filename, caught[0].lineno) == (__file__, line)  # points at the user's decorator
    assert pipeline.stages["double"].task_size == 4 and pipeline.stages["double"].batch_size is None
    assert plan(pipeline).stages["double"].task_size == 4
    result = pipeline.run(executor="threads", store=tmp_path)
    assert result.table("double")["double"].to_pylist() == [2 * i for i in range(10)]


def test_batch_size_on_a_source_still_cuts_its_batches(tmp_path) -> None:
    pipeline = Pipeline("cut")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not deprecated on a source

        @pipeline.source(batch_size=3)
        def numbers() -> Iterator[int]:
            yield from range(10)

    assert (pipeline.stages["numbers"].batch_size, pipeline.stages["numbers"].task_size) == (3, None)
    assert pipeline.run(executor="inline", store=tmp_path).stages["numbers"].computed_batches == 4
