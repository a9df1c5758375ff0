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

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[str]:
    names = []
    for package in (pipelines, executors, stages):
        names.append(package.__name__)
        names.extend(
            m.name
            for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
            if m.name != "pipelines.__main__"
        )
    return sorted(names)


MODULES = _modules()


def test_every_package_has_modules():
    assert {"pipelines.define.model", "executors.base", "stages.aggregate"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if name == "executors.dask_cluster":
        pytest.importorskip("distributed")
    if name == "executors.ray_cluster":
        request.getfixturevalue("ray_session")  # the session's Ray (it skips outside a loopback-only namespace)
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in doctest.DocTestFinder().find(module):
        test.globs["tmp_path"] = tmp_path
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"
