"""A user's project, laid out as the README shows (``dags/``, ``tests/``), tested with plain ``pytest``.

Plain ``pytest`` does not put the current folder on ``sys.path`` (``python -m pytest``
does); the plugin (the ``pytest11`` entry point) puts the project's root there, and gives a
throwaway store. ``--dags`` from another folder finds modules beside ``dags/``. Reduce and
batch parameters get what their annotations ask for, or the pipeline is refused when defined.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines import ArityError, Pipeline, UnknownStageError
from tests.conftest import ROOT, cli
from tests.helpers import write_dags

TEST_FILE = """
from dags.process_pool import count_primes, pipeline


def test_count_primes():
    assert count_primes(10).primes == 4


def test_pipeline(pipelines_store):
    result = pipeline.run({"step": 10, "count": 3}, executor="inline", store=pipelines_store)
    assert result.ok
    assert result.table("total").to_pylist() == [{"limits": 3, "primes": 4 + 8 + 10}]
    assert list(pipelines_store.iterdir())  # the run went to the throwaway store
"""


def make_project(where: Path) -> Path:
    project = where / "proj"
    (project / "dags").mkdir(parents=True)
    (project / "tests").mkdir()
    shutil.copy(ROOT / "dags" / "process_pool.py", project / "dags" / "process_pool.py")
    (project / "tests" / "test_primes.py").write_text(TEST_FILE)
    return project


def _entry_point_installed() -> bool:
    from importlib.metadata import entry_points

    return any(ep.value == "pipelines.pytest_plugin" for ep in entry_points(group="pytest11"))


def test_plain_pytest_passes_in_a_project_with_only_dags_and_tests(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    installed = tmp_path / "site"  # the packages as installed: not this checkout's own dags/
    installed.mkdir()
    for package in ("pipelines", "executors", "stages"):
        (installed / package).symlink_to(ROOT / package)
    env = {**os.environ, "PYTHONPATH": str(installed)}
    env.pop("PIPELINES_STORE", None)
    pytest_bin = Path(sys.executable).with_name("pytest")
    base = [str(pytest_bin), "-q", "-p", "no:cacheprovider", "-p", "no:pipelines"]
    without = subprocess.run(base, cwd=project, env=env, capture_output=True, text=True)
    assert without.returncode != 0 and "No module named 'dags'" in without.stdout  # what the plugin fixes
    # where the install has the entry point pytest loads the plugin by itself; naming it again would
    # register it twice
    plugin = [] if _entry_point_installed() else ["-p", "pipelines.pytest_plugin"]
    plain = subprocess.run([*base[:-2], *plugin], cwd=project, env=env, capture_output=True, text=True)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "2 passed" in plain.stdout
    assert not (project / ".pipelines").exists()


def test_the_plugin_is_declared_as_a_pytest11_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"pipelines": "pipelines.pytest_plugin"}


def test_dags_from_another_folder_imports_modules_beside_it(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "dags").mkdir(parents=True)
    (project / "mylib.py").write_text("def triple(x):\n    return 3 * x\n")
    write_dags(
        project / "dags",
        tripled="""
        from mylib import triple
        from pipelines import Pipeline

        pipeline = Pipeline("tripled")


        @pipeline.source
        def numbers():
            yield from range(4)


        @pipeline.map(over=numbers, kind="cpu")
        def tripled(x: int) -> int:
            return triple(x)
    """,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = cli("run", "tripled", "--dags", str(project / "dags"), cwd=elsewhere, check=0)
    assert "tripled: 4 rows → " in proc.stdout


def test_unknown_upstream_fails_when_the_pipeline_is_loaded(tmp_path: Path) -> None:
    write_dags(
        tmp_path,
        typo="""
        from pipelines import Pipeline

        pipeline = Pipeline("typo")


        @pipeline.source
        def numbers():
            yield from range(3)


        @pipeline.map(over="numbrs")
        def double(x: int) -> int:
            return 2 * x
    """,
    )
    proc = cli("show", "typo", "--dags", str(tmp_path), check=2)
    assert "stage 'double': unknown input stage 'numbrs'" in proc.stderr and "numbers" in proc.stderr
    from pipelines.define import loader

    with pytest.raises(UnknownStageError, match="did you mean 'numbers'"):
        loader.load("typo", tmp_path)


class TestTableAnnotations:
    def pipeline(self) -> tuple[Pipeline, object]:
        pipeline = Pipeline("annotated")

        @pipeline.source
        def numbers():
            yield from range(5)

        @pipeline.map(over=numbers)
        def square(x: int) -> int:
            return x * x

        return pipeline, square

    def test_a_reduce_annotated_list_of_int_gets_ints(self, tmp_path: Path) -> None:
        pipeline, square = self.pipeline()

        @pipeline.reduce(inputs=[square])
        def total(values: list[int]) -> int:
            assert all(type(v) is int for v in values), values
            return sum(values)

        assert pipeline.run(executor="inline", store=tmp_path).table("total").to_pylist() == [{"total": 30}]

    def test_a_batch_stage_annotated_dataframe_gets_one(self, tmp_path: Path) -> None:
        import pandas as pd

        pipeline, square = self.pipeline()

        @pipeline.batch(over=square)
        def described(frame: pd.DataFrame) -> pa.Table:
            assert isinstance(frame, pd.DataFrame)
            return pa.table({"n": [len(frame)], "sum": [int(frame["square"].sum())]})

        assert pipeline.run(executor="inline", store=tmp_path).table("described").to_pylist() == [{"n": 5, "sum": 30}]

    def test_any_other_annotation_is_refused_when_defined(self) -> None:
        pipeline, square = self.pipeline()
        with pytest.raises(
            ArityError,
            match=r"parameter 'values' is annotated int, but it receives a whole table "
            r"of values: annotate it pa.Table, pd.DataFrame or list\[T\]",
        ):

            @pipeline.reduce(inputs=[square])
            def total(values: int) -> int:
                return values


def installed_as_pip_would(where: Path) -> Path:
    """A folder that holds the packages as installed, with the distribution's metadata pip
    writes from ``pyproject.toml`` (its entry points): what a user's ``pip install`` gives."""
    installed = where / "site"
    installed.mkdir()
    for package in ("pipelines", "executors", "stages"):
        (installed / package).symlink_to(ROOT / package)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    info = installed / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = project["entry-points"]
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for group, eps in groups.items()
        )
    )
    return installed


def test_plain_pytest_finds_the_installed_plugin_by_itself(tmp_path: Path) -> None:
    """Installed as a user installs it, the plugin loads through its entry point: no ``-p`` at all."""
    project = make_project(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PIPELINES_STORE"}
    env["PYTHONPATH"] = str(installed_as_pip_would(tmp_path))
    plain = subprocess.run(
        [str(Path(sys.executable).with_name("pytest")), "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "2 passed" in plain.stdout
    assert not (project / ".pipelines").exists()
