"""Dependency direction on the ``pipelines`` side, checked in fresh interpreters.

``model`` is pure data: it imports neither executor backends nor the store or the runner, and
``import pipelines`` alone stays light (no pyarrow), so ``--help`` and ``list`` answer at once.
"""

from __future__ import annotations

import pytest

from .helpers import modules_after

BACKENDS = [
    "executors.threads",
    "executors.processes",
    "executors.asyncio_loop",
    "executors.inline",
    "executors.joblib_pool",
    "executors.dask_cluster",
    "executors.ray_cluster",
]
HEAVY = ["distributed", "dask", "ray", "joblib"]


def test_model_imports_no_executors_store_or_runner() -> None:
    modules = modules_after("import pipelines.define.model")
    assert "executors" not in modules
    assert not modules & {
        "pipelines.store",
        "pipelines.store.ledger",
        "pipelines.store.arrow",
        "pipelines._engine.runner",
        "pipelines._engine.task",
        "sqlite3",
    }
    assert not modules & set(HEAVY)


def test_defining_a_pipeline_imports_no_backend() -> None:
    modules = modules_after("""
        from collections.abc import Iterator
        from pipelines import Pipeline

        pipeline = Pipeline("p")

        @pipeline.source
        def numbers() -> Iterator[int]:
            yield 1

        @pipeline.map(over=numbers, executor="dask", rate="5/s")
        def double(x: int) -> int:
            return 2 * x

        pipeline.validate().order()
    """)
    assert not modules & set(BACKENDS)  # the registry checks the name without importing the backend
    assert not modules & set(HEAVY)
    assert not modules & {"pipelines.store", "pipelines._engine.runner"}


def test_plan_imports_no_backend_or_store() -> None:
    modules = modules_after("import pipelines._engine.plan")
    assert not modules & set(BACKENDS)
    assert not modules & {"pipelines.store", "pipelines._engine.runner", "executors"}


@pytest.mark.parametrize(
    "statement",
    [
        "import pipelines",
        "import pipelines.errors",
        "import pipelines.cli.commands; pipelines.cli.commands.build_parser()",
    ],
)
def test_light_imports_skip_pyarrow(statement: str) -> None:
    modules = modules_after(statement)
    assert not modules & {"pyarrow", "pandas", "numpy", "pydantic", *HEAVY}, sorted(
        modules & {"pyarrow", "pandas", "numpy", "pydantic", *HEAVY}
    )
    assert not [m for m in modules if m.startswith("executors.")]
