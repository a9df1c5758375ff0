"""The examples in the docstrings of ``pipelines``, ``executors`` and ``stages`` run and say true.

One test per module. An example that needs a store gets ``tmp_path``, a fresh folder, as a
doctest global; examples marked ``+SKIP`` (they need data, a network or a cluster address)
are only read.
"""
from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import executors
import pipelines
import stages

from .executors.helpers import only_loopback

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[str]:
    names = []
    for package in (pipelines, executors, stages):
        names.append(package.__name__)
        names.extend(m.name for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
                     if m.name != "pipelines.__main__")
    return sorted(names)


MODULES = _modules()
NEEDS = {  # module: (optional dependency, condition to run, why not)
    "executors.dask_cluster": ("distributed", lambda: True, ""),
    "executors.ray_cluster": ("ray", only_loopback, "Ray binds to every interface: run inside tests/loopback_only.py"),
}


def test_every_package_has_modules():
    assert {"pipelines.model", "executors.base", "stages.aggregate"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, tmp_path: Path) -> None:
    if name in NEEDS:
        dependency, runs, why = NEEDS[name]
        pytest.importorskip(dependency)
        if not runs():
            pytest.skip(why)
    module = importlib.import_module(name)
    suite = doctest.DocTestFinder().find(module)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in suite:
        test.globs["tmp_path"] = tmp_path
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"
