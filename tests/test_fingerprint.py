"""What changes a stage's code fingerprint, and what must not.

A fingerprint decides whether a stored batch is reused, so both directions matter: an edit
that can change results (the body, a helper, a helper's helper, a module constant, a default
argument, a closed-over value) must change it; an edit that cannot (a comment, a blank line,
a reflowed call, a docstring's wording, an unrelated function) must not, or every cosmetic
edit would recompute a whole run.

Each version of a module is compiled from source under the same module name, as an edited
file is on the next run, and lives in a folder outside the standard library and
site-packages, so it counts as user code.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipelines import Pipeline
from pipelines._engine import fingerprint as fp

Load = Callable[..., types.ModuleType]


@pytest.fixture
def load(tmp_path: Path) -> Iterator[Load]:
    """Compile ``source`` as module ``name`` (replacing any earlier version of it)."""
    names: set[str] = set()

    def _load(source: str, name: str = "user_stages") -> types.ModuleType:
        module = types.ModuleType(name)
        module.__file__ = str(tmp_path / f"{name}.py")
        sys.modules[name] = module
        names.add(name)
        exec(compile(textwrap.dedent(source), module.__file__, "exec"), module.__dict__)
        return module

    yield _load
    for name in names:
        sys.modules.pop(name, None)


def code_fp(load: Load, source: str, name: str = "stage") -> str:
    return fp.code_fingerprint(getattr(load(source), name))


BASE = """
    import json

    FACTOR = 2

    def inner(x):
        return x + 1

    def helper(x):
        return inner(x) * FACTOR

    def unrelated(x):
        return x - 1

    def stage(x, scale=10):
        '''Scale a helped value.'''
        return json.dumps(helper(x) * scale)
"""


def test_the_same_source_gives_the_same_fingerprint(load):
    assert code_fp(load, BASE) == code_fp(load, BASE)
    assert len(code_fp(load, BASE)) == 32


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(
            lambda s: s.replace("return inner(x) * FACTOR", "return inner(x) * FACTOR  # doubled"), id="a comment"
        ),
        pytest.param(lambda s: s.replace("    def stage", "    # the stage\n\n\n    def stage"), id="blank lines"),
        pytest.param(
            lambda s: s.replace(
                "json.dumps(helper(x) * scale)", "json.dumps(\n            helper( x )*scale\n        )"
            ),
            id="formatting",
        ),
        pytest.param(
            lambda s: s.replace("Scale a helped value.", "Scale the value the helper returns."),
            id="a docstring's wording",
        ),
        pytest.param(lambda s: s.replace("return x - 1", "return x - 2"), id="an unreferenced function"),
        pytest.param(lambda s: s + "\n    OTHER = 5\n", id="a new unreferenced constant"),
    ],
)
def test_edits_that_cannot_change_results_keep_the_fingerprint(load, edit):
    assert code_fp(load, edit(BASE)) == code_fp(load, BASE)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda s: s.replace("helper(x) * scale", "helper(x) + scale"), id="the body"),
        pytest.param(lambda s: s.replace("return inner(x) * FACTOR", "return inner(x) * FACTOR + 1"), id="a helper"),
        pytest.param(lambda s: s.replace("return x + 1", "return x + 2"), id="a helper's helper"),
        pytest.param(lambda s: s.replace("FACTOR = 2", "FACTOR = 3"), id="a module constant a helper reads"),
        pytest.param(lambda s: s.replace("scale=10", "scale=11"), id="a default argument"),
        pytest.param(lambda s: s.replace("json.dumps(", "str("), id="a library function called"),
    ],
)
def test_edits_that_can_change_results_change_the_fingerprint(load, edit):
    assert code_fp(load, edit(BASE)) != code_fp(load, BASE)


def test_adding_a_docstring_keeps_the_fingerprint(load):
    without = BASE.replace("        '''Scale a helped value.'''\n", "")
    assert without != BASE
    assert code_fp(load, without) == code_fp(load, BASE)


def test_a_docstring_on_a_function_that_returns_nothing_keeps_the_fingerprint(load):
    # the implicit ``return None`` loads a constant whose index the docstring shifts
    plain = """
    LOG = []

    def stage(x):
        LOG.append(x)
    """
    documented = plain.replace("def stage(x):\n", "def stage(x):\n        '''Remember x.'''\n")
    assert documented != plain
    assert code_fp(load, documented) == code_fp(load, plain)


def test_a_string_that_is_not_a_docstring_counts(load):
    # a lambda's or a nested function's first constant may be a plain string, not a docstring
    assert code_fp(load, "stage = lambda x: 'a' + x\n") != code_fp(load, "stage = lambda x: 'b' + x\n")
    nested = """
    def stage(x):
        def inner():
            return "{word}"
        return inner() + x
    """
    assert code_fp(load, nested.format(word="a")) != code_fp(load, nested.format(word="b"))


def test_a_set_constant_gives_the_same_fingerprint_in_every_process(tmp_path):
    # string hashing is salted per process: a set's members print in a different order in each
    (tmp_path / "setconst.py").write_text(
        "WORDS = {'alpha', 'beta', 'gamma', 'delta', 'epsilon'}\n\n"
        "def stage(x):\n    return x in {'one', 'two', 'three', 'four', 'five'} or x in WORDS\n"
    )
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import setconst; "
        "from pipelines._engine.fingerprint import code_fingerprint; print(code_fingerprint(setconst.stage))"
    )
    seen = set()
    for seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True, check=True
        )
        seen.add(out.stdout.strip())
    assert len(seen) == 1, seen


CLOSURE = """
    def make(step):
        def add(x):
            return x + step
        return add

    stage = make({step})
"""


def test_a_closed_over_value_is_part_of_the_fingerprint(load):
    assert code_fp(load, CLOSURE.format(step=1)) == code_fp(load, CLOSURE.format(step=1))
    assert code_fp(load, CLOSURE.format(step=1)) != code_fp(load, CLOSURE.format(step=2))


def test_a_closed_over_function_is_followed(load):
    source = """
        def double(x):
            return x * {n}

        def make(fn):
            def stage(x):
                return fn(x)
            return stage

        stage = make(double)
    """
    assert code_fp(load, source.format(n=2)) != code_fp(load, source.format(n=3))


def test_a_helper_in_another_user_module_is_followed(load):
    """``helpers.describe(...)`` through a module: an edit in ``describe`` counts."""
    stage_source = """
        import user_helpers

        def stage(x):
            return user_helpers.describe(x)
    """
    load("def describe(x):\n    return x * 2\n", "user_helpers")
    before = code_fp(load, stage_source)
    load("def describe(x):\n    return x * 3\n", "user_helpers")
    after = code_fp(load, stage_source)
    assert after != before
    load("def describe(x):\n    # a comment\n    return x * 3\n", "user_helpers")
    assert code_fp(load, stage_source) == after


def test_a_method_of_a_class_the_stage_uses_is_followed(load):
    source = """
        class Scaler:
            def __call__(self, x):
                return x * {n}

        def stage(x):
            return Scaler()(x)
    """
    assert code_fp(load, source.format(n=2)) == code_fp(load, source.format(n=2))
    assert code_fp(load, source.format(n=2)) != code_fp(load, source.format(n=3))


def test_a_callable_instance_is_fingerprinted_by_its_class(load):
    source = """
        class Stage:
            def __call__(self, x):
                return x * {n}

        stage = Stage()
    """
    assert code_fp(load, source.format(n=2)) != code_fp(load, source.format(n=3))


def test_a_partial_counts_its_fixed_arguments(load):
    module = load("def scale(x, factor):\n    return x * factor\n")
    two = fp.code_fingerprint(functools.partial(module.scale, factor=2))
    assert two == fp.code_fingerprint(functools.partial(module.scale, factor=2))
    assert two != fp.code_fingerprint(functools.partial(module.scale, factor=3))
    assert two != fp.code_fingerprint(module.scale)


def test_recursive_helpers_terminate(load):
    source = """
        def even(n):
            return n == 0 or odd(n - 1)

        def odd(n):
            return n != 0 and even(n - 1)

        def stage(n):
            return stage(n - 1) if n > 10 else even(n)
    """
    assert code_fp(load, source) == code_fp(load, source)
    assert code_fp(load, source) != code_fp(load, source.replace("n == 0", "n <= 0"))


def test_library_code_is_named_not_read():
    """Upgrading a library must not invalidate a run: its functions count by name only."""
    assert not fp._is_user_module("json")
    assert not fp._is_user_module("pyarrow")
    assert not fp._is_user_module("builtins")
    assert not fp._is_user_module(None)
    assert fp._is_user_module("stages.images")  # this project's stage library is user code
    assert fp._is_user_module("dags.anything")
    assert fp._is_user_module("__main__")


def test_digest_is_stable_and_separates_its_parts():
    assert fp.digest("a", b"b", {"c": [1]}) == fp.digest("a", b"b", {"c": [1]})
    assert fp.digest({"x": 1, "y": 2}) == fp.digest({"y": 2, "x": 1})  # key order does not matter
    assert fp.digest("ab", "c") != fp.digest("a", "bc")  # parts are length-prefixed


def test_a_fixed_argument_changes_the_config_part_only(load):
    module = load("""
        def numbers():
            yield from range(3)

        def scale(x, factor):
            return x * factor
    """)

    def parts(factor: int) -> dict[str, str]:
        pipeline = Pipeline("p", module="user_stages")
        pipeline.source(module.numbers)
        stage = pipeline.map(module.scale, over=module.numbers, factor=factor)
        return fp.stage_parts(stage, None)

    two, three = parts(2), parts(3)
    assert two == parts(2)
    assert two["code"] == three["code"]
    assert two["config"] != three["config"]
    assert fp.stage_fingerprint(two) != fp.stage_fingerprint(three)


def test_batch_key_changes_with_the_fingerprint_and_with_each_input():
    key = fp.batch_key("fp1", ["a", "b"])
    assert key == fp.batch_key("fp1", ["a", "b"])
    assert (
        len(
            {
                key,
                fp.batch_key("fp2", ["a", "b"]),
                fp.batch_key("fp1", ["a", "c"]),
                fp.batch_key("fp1", ["b", "a"]),
                fp.batch_key("fp1", ["a"]),
            }
        )
        == 5
    )


@pytest.mark.parametrize(("kind", "stored_as"), [("map", "item"), ("flat_map", "flat"), ("reduce", "all")])
def test_a_stage_kind_hashes_as_the_word_existing_stores_were_written_with(load, kind, stored_as):
    """Stage kinds were renamed to their public words; results stored before that stay reusable."""
    module = load("""
        def numbers():
            yield from range(3)

        def double(x):
            return x * 2
    """)
    pipeline = Pipeline("p", module="user_stages")
    pipeline.source(module.numbers)
    stage = pipeline.map(module.double, over=module.numbers)
    renamed = dataclasses.replace(stage, granularity=kind)
    assert fp.stage_parts(renamed, None) == fp.stage_parts(dataclasses.replace(stage, granularity=stored_as), None)
    assert fp.stage_parts(renamed, None) != fp.stage_parts(dataclasses.replace(stage, granularity="batch"), None)
