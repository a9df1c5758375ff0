"""``executors`` knows nothing of ``pipelines``, and imports its heavy backends only on demand.

Checked in fresh interpreters, since this test session has long imported everything.
"""

from __future__ import annotations

import pytest

from ..helpers import modules_after

HEAVY = {"distributed", "dask", "ray", "joblib"}


def pipelines_modules(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "pipelines" or m.startswith("pipelines.")}


def test_import_executors_is_light() -> None:
    modules = modules_after("import executors")
    assert not pipelines_modules(modules)
    assert not modules & HEAVY, sorted(modules & HEAVY)


def test_the_registry_imports_no_backend_until_asked() -> None:
    modules = modules_after("import executors; executors.names(); executors.check_name('dask')")
    assert not modules & HEAVY


def test_the_contract_suite_needs_no_test_framework() -> None:
    modules = modules_after("import executors.testing")
    assert not modules & {"pytest", "_pytest", *HEAVY}
    assert not pipelines_modules(modules)


@pytest.mark.parametrize(
    ("backend", "dependency"), [("joblib_pool", "joblib"), ("dask_cluster", "distributed"), ("ray_cluster", "ray")]
)
def test_backends_import_no_pipelines(backend: str, dependency: str) -> None:
    pytest.importorskip(dependency)
    modules = modules_after(f"import executors.{backend}")
    assert dependency in modules
    assert not pipelines_modules(modules)
    assert not (modules & HEAVY) - {dependency, "dask"}  # one backend never drags in another
