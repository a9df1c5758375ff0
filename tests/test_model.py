"""Pipeline definitions: every definition error names its stage; valid shapes build as declared.

Broken dags modules live in ``tests/dags_broken/`` (one module per error) and are imported
through ``pipelines.define.loader`` exactly as the CLI imports a user's module.
"""

from __future__ import annotations

import datetime as dt
import enum
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from pipelines import (
    ArityError,
    CycleError,
    DefinitionError,
    DuplicateStageError,
    LoadError,
    ParamError,
    Pipeline,
    Stage,
    UnknownStageError,
)
from pipelines.define import loader

BROKEN = Path(__file__).resolve().parent / "dags_broken"


def with_source(name: str = "p", params: type[BaseModel] | None = None) -> tuple[Pipeline, object]:
    """A pipeline holding one source stage ``numbers``."""
    pipeline = Pipeline(name, params=params)

    @pipeline.source
    def numbers() -> Iterator[int]:
        yield from range(3)

    return pipeline, numbers


def square(x: int) -> int:
    return x * x


# -- definition errors, raised as the stage is added -------------------------------------------


class TestInvalidStage:
    def test_duplicate_name(self) -> None:
        pipeline, numbers = with_source()
        pipeline.map(square, over=numbers)
        with pytest.raises(DuplicateStageError, match=r"stage 'square'.*already defined in pipeline 'p'"):
            pipeline.map(square, over=numbers)

    def test_duplicate_name_given_explicitly(self) -> None:
        pipeline, numbers = with_source()
        with pytest.raises(DuplicateStageError, match="stage 'numbers'"):
            pipeline.map(square, over=numbers, name="numbers")  # the source is called numbers too

    def test_function_without_a_parameter_for_its_input(self) -> None:
        pipeline, numbers = with_source()

        def constant() -> int:
            return 1

        with pytest.raises(ArityError, match=r"stage 'constant'.*needs an argument for its input \('numbers'\)"):
            pipeline.map(constant, over=numbers)

    def test_reduce_with_fewer_parameters_than_inputs(self) -> None:
        pipeline, numbers = with_source()
        pipeline.map(square, over=numbers)

        def one(a):
            return a

        with pytest.raises(ArityError, match=r"stage 'one'.*one argument per input"):
            pipeline.reduce(one, inputs=[numbers, square])

    def test_parameter_that_receives_nothing(self) -> None:
        pipeline, numbers = with_source()

        def add(x: int, y: int) -> int:
            return x + y

        with pytest.raises(ArityError, match=r"stage 'add'.*'y'.*receive nothing"):
            pipeline.map(add, over=numbers)

    def test_params_without_a_params_model(self) -> None:
        pipeline, numbers = with_source()

        def scale(x: int, params) -> int:
            return x

        with pytest.raises(ArityError, match=r"stage 'scale'.*takes 'params'.*no params model"):
            pipeline.map(scale, over=numbers)

    def test_fixed_argument_the_function_does_not_take(self) -> None:
        pipeline, numbers = with_source()
        with pytest.raises(ArityError, match=r"stage 'square'.*no parameter 'factor'"):
            pipeline.map(square, over=numbers, factor=2)

    def test_misspelt_option_suggests_the_option(self) -> None:
        pipeline, numbers = with_source()
        with pytest.raises(ArityError, match=r"stage 'square'.*did you mean 'retries'"):
            pipeline.map(square, over=numbers, retry=2)

    def test_misspelt_option_is_suggested_by_its_value(self) -> None:
        pipeline, numbers = with_source()
        with pytest.raises(ArityError, match=r"stage 'square'.*did you mean 'retry_on'"):
            pipeline.map(square, over=numbers, retry_of=lambda exc: True)

    def test_misspelt_fixed_argument_suggests_the_parameter(self) -> None:
        pipeline, numbers = with_source()

        def scale(x: int, factor: int = 1) -> int:
            return x * factor

        with pytest.raises(ArityError, match=r"stage 'scale'.*no parameter 'factr'.*did you mean 'factor'"):
            pipeline.map(scale, over=numbers, factr=2)

    def test_side_input_without_a_parameter(self) -> None:
        pipeline, numbers = with_source()
        with pytest.raises(ArityError, match=r"stage 'square'.*parameter named 'numbers'"):
            pipeline.map(square, over=numbers, side=[numbers])

    def test_unknown_kind(self) -> None:
        pipeline, numbers = with_source()
        with pytest.raises(DefinitionError, match=r"stage 'square': kind must be one of \('cpu', 'io'\), not 'gpu'"):
            pipeline.map(square, over=numbers, kind="gpu")

    def test_unknown_on_error(self) -> None:
        pipeline, numbers = with_source()
        with pytest.raises(DefinitionError, match=r"stage 'square': on_error must be one of .*'skip'.*not 'ignore'"):
            pipeline.map(square, over=numbers, on_error="ignore")

    @pytest.mark.parametrize("retries", [-1, 1.5, "3", True])
    def test_bad_retries(self, retries: object) -> None:
        pipeline, numbers = with_source()
        with pytest.raises(DefinitionError, match=r"stage 'square': retries must be a non-negative integer"):
            pipeline.map(square, over=numbers, retries=retries)

    @pytest.mark.parametrize("timeout", [0, -1.0, "5", True])
    def test_bad_timeout(self, timeout: object) -> None:
        pipeline, numbers = with_source()
        with pytest.raises(DefinitionError, match=r"stage 'square': timeout must be a positive number"):
            pipeline.map(square, over=numbers, timeout=timeout)

    @pytest.mark.parametrize("option", ["concurrency", "task_size"])
    def test_zero_concurrency_or_task_size(self, option: str) -> None:
        pipeline, numbers = with_source()
        with pytest.raises(DefinitionError, match=rf"stage 'square': {option} must be a positive integer"):
            pipeline.map(square, over=numbers, **{option: 0})

    @pytest.mark.parametrize("option", ["concurrency", "task_size"])
    def test_bool_concurrency_or_task_size(self, option: str) -> None:
        pipeline, numbers = with_source()
        with pytest.raises(DefinitionError, match=rf"stage 'square': {option} must be a positive integer, not True"):
            pipeline.map(square, over=numbers, **{option: True})

    @pytest.mark.parametrize("rate", ["fast", "0/s", "10/fortnight"])
    def test_bad_rate(self, rate: str) -> None:
        pipeline, numbers = with_source()
        with pytest.raises(DefinitionError, match=rf"stage 'square': rate '{rate}'"):
            pipeline.map(square, over=numbers, rate=rate)

    def test_unknown_executor_suggests_a_name(self) -> None:
        pipeline, numbers = with_source()
        with pytest.raises(
            DefinitionError, match=r"stage 'square': unknown executor 'thread' \(did you mean 'threads'\?\)"
        ):
            pipeline.map(square, over=numbers, executor="thread")

    def test_flat_map_that_does_not_return_an_iterable(self) -> None:
        pipeline, numbers = with_source()

        def explode(x: int) -> int:
            return x

        with pytest.raises(DefinitionError, match=r"stage 'explode': a flat_map function returns an iterable"):
            pipeline.flat_map(explode, over=numbers)

    def test_output_annotation_arrow_cannot_hold(self) -> None:
        pipeline, numbers = with_source()

        def connect(port: int) -> socket.socket:
            raise NotImplementedError

        with pytest.raises(
            DefinitionError, match=r"stage 'connect': its output type cannot be stored as Arrow.*socket"
        ):
            pipeline.map(connect, over=numbers, kind="io")

    def test_output_union_of_unrelated_types(self) -> None:
        pipeline, numbers = with_source()

        def either(x: int) -> int | str:
            return x

        with pytest.raises(DefinitionError, match=r"stage 'either': its output type cannot be stored as Arrow.*union"):
            pipeline.map(either, over=numbers)

    def test_input_function_of_no_stage(self) -> None:
        pipeline, _ = with_source()

        def stray(x: int) -> int:
            return x

        with pytest.raises(UnknownStageError, match=r"stage 'square': input 'stray' is not a stage of pipeline 'p'"):
            pipeline.map(square, over=stray)

    def test_input_stage_of_another_pipeline(self) -> None:
        pipeline, _ = with_source("first")
        other, other_numbers = with_source("second")
        foreign = other.map(square, over=other_numbers)
        with pytest.raises(UnknownStageError, match=r"stage 'square': input 'square' is a stage of another pipeline"):
            pipeline.map(square, over=foreign)

    def test_input_function_used_by_two_stages_is_ambiguous(self) -> None:
        pipeline, numbers = with_source()
        pipeline.map(square, over=numbers, name="a")
        pipeline.map(square, over=numbers, name="b")

        def after(x: int) -> int:
            return x

        with pytest.raises(DefinitionError, match=r"stage 'after': function 'square' is used by stages \['a', 'b'\]"):
            pipeline.map(after, over=square)

    def test_source_with_an_input_parameter(self) -> None:
        pipeline = Pipeline("p")
        with pytest.raises(ArityError, match=r"stage 'square'.*'x'.*receive nothing"):
            pipeline.source(square)

    def test_map_without_inputs(self) -> None:
        pipeline, _ = with_source()
        with pytest.raises(DefinitionError, match=r"stage 'square': needs at least one input stage"):
            pipeline.reduce(square, inputs=[])

    def test_lambda_needs_a_name(self) -> None:
        pipeline, numbers = with_source()
        with pytest.raises(DefinitionError, match=r"needs name=\.\.\."):
            pipeline.map(lambda x: x, over=numbers)


class TestInvalidPipeline:
    """Errors found when the links are checked, by ``validate()`` (which the loader calls)."""

    def test_cycle_names_its_stages(self) -> None:
        pipeline, _ = with_source()
        pipeline.map(square, over="b", name="a")
        pipeline.map(square, over="a", name="b")
        with pytest.raises(CycleError, match=r"stage '[ab]' is part of a cycle: (a -> b -> a|b -> a -> b)"):
            pipeline.validate()

    def test_stage_reading_its_own_output(self) -> None:
        pipeline, _ = with_source()
        pipeline.map(square, over="loop", name="loop")
        with pytest.raises(CycleError, match=r"stage 'loop' reads its own output"):
            pipeline.validate()

    def test_unknown_input_name_suggests_a_name(self) -> None:
        pipeline, _ = with_source()
        pipeline.map(square, over="numbrs")
        with pytest.raises(
            UnknownStageError, match=r"stage 'square': unknown input stage 'numbrs' \(did you mean 'numbers'\?\)"
        ):
            pipeline.validate()

    def test_order_validates_too(self) -> None:
        pipeline, _ = with_source()
        pipeline.map(square, over="nope")
        with pytest.raises(UnknownStageError, match=r"stage 'square'"):
            pipeline.order()

    def test_no_source(self) -> None:
        pipeline = Pipeline("sourceless")
        pipeline.map(square, over="numbers")
        with pytest.raises(DefinitionError, match=r"pipeline 'sourceless' has no source stage"):
            pipeline.validate()

    def test_unknown_stage_lookup_suggests_a_name(self) -> None:
        pipeline, _ = with_source()
        with pytest.raises(UnknownStageError, match=r"did you mean 'numbers'"):
            pipeline["numbrs"]

    def test_pipeline_name_must_be_an_identifier(self) -> None:
        with pytest.raises(DefinitionError, match=r"pipeline name 'my pipeline'"):
            Pipeline("my pipeline")

    def test_params_must_be_a_pydantic_model(self) -> None:
        with pytest.raises(DefinitionError, match=r"pipeline 'p': params must be a pydantic BaseModel"):
            Pipeline("p", params=dict)  # type: ignore[arg-type]

    def test_definition_errors_are_value_errors(self) -> None:
        for error in (CycleError, UnknownStageError, DuplicateStageError, ArityError, ParamError):
            assert issubclass(error, ValueError)


# -- broken dags modules, as the loader imports them -----------------------------------------------


class TestBrokenModules:
    @pytest.mark.parametrize(
        ("module", "error", "message"),
        [
            ("cyclic", CycleError, r"stage 'p[io]ng' is part of a cycle: (ping -> pong -> ping|pong -> ping -> pong)"),
            (
                "unknown_upstream",
                UnknownStageError,
                r"stage 'double': unknown input stage 'numbrs' \(did you mean 'numbers'\?\)",
            ),
            ("duplicate", DuplicateStageError, r"stage 'double': a stage of that name is already defined"),
            ("bad_arity", ArityError, r"stage 'add': parameter\(s\) 'y' of add\(\) receive nothing"),
            ("bad_output", DefinitionError, r"stage 'connect': its output type cannot be stored as Arrow"),
            (
                "bad_executor",
                DefinitionError,
                r"stage 'double': unknown executor 'thread' \(did you mean 'threads'\?\)",
            ),
            ("no_source", DefinitionError, r"pipeline 'no_source' has no source stage"),
        ],
    )
    def test_definition_error_names_the_stage(self, module: str, error: type[Exception], message: str) -> None:
        with pytest.raises(error, match=message):
            loader.load(module, BROKEN)

    def test_syntax_error_names_file_and_line(self) -> None:
        with pytest.raises(LoadError, match=r"syntax_error\.py, line 9: expected ':'"):
            loader.load("syntax_error", BROKEN)

    def test_missing_import_names_file_line_and_module(self) -> None:
        with pytest.raises(
            LoadError,
            match=r"broken_import\.py, line 3: .*ModuleNotFoundError: "
            r"No module named 'no_such_module_for_pipelines_tests'",
        ):
            loader.load("broken_import", BROKEN)

    def test_exception_at_import_names_file_and_line(self) -> None:
        with pytest.raises(LoadError, match=r"failing_import\.py, line 15: .*RuntimeError: configuration file"):
            loader.load("failing_import", BROKEN)

    def test_loading_twice_fails_twice(self) -> None:
        for _ in range(2):
            with pytest.raises(LoadError, match="broken_import"):
                loader.load("broken_import", BROKEN)
        for _ in range(2):
            with pytest.raises(CycleError):
                loader.load("cyclic", BROKEN)

    def test_unknown_pipeline_suggests_a_name(self) -> None:
        with pytest.raises(LoadError, match=r"no pipeline named 'cyclc'.*\(did you mean 'cyclic'\?\)"):
            loader.load("cyclc", BROKEN)

    def test_unknown_pipeline_lists_the_known_ones(self) -> None:
        with pytest.raises(LoadError, match=r"no pipeline named 'zzz'.*known: .*bad_arity"):
            loader.load("zzz", BROKEN)

    def test_missing_folder_says_so(self, tmp_path: Path) -> None:
        with pytest.raises(LoadError, match=r"does not exist; use --dags DIR"):
            loader.load("anything", tmp_path / "nowhere")


class TestLoader:
    """Finding pipelines in a dags folder: by the name given to ``Pipeline(...)``, not the file name."""

    def write(self, folder: Path, name: str, text: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.py").write_text(text)

    def test_a_test_dags_module(self, load) -> None:  # the conftest fixture
        pipeline = load("cli_squares")
        assert pipeline.name == "cli_squares" and pipeline.module.endswith(".cli_squares")
        assert pipeline.order() == ["numbers", "square", "total"]
        assert pipeline.description_line() == "Squares of the first N numbers, and their sum."
        assert pipeline.parse_params({"n": "3"}).n == 3  # type: ignore[union-attr]
        assert load("cli_squares") is pipeline  # imported once

    def test_name_differs_from_file_and_two_pipelines_per_module(self, tmp_path: Path) -> None:
        self.write(tmp_path / "dags", "multi", MULTI)
        assert [(i.name, i.path.name, i.doc) for i in loader.discover(tmp_path / "dags")] == [
            ("first", "multi.py", "Two pipelines in one module."),
            ("second", "multi.py", "Two pipelines in one module."),
        ]
        first, second = loader.load("first", tmp_path / "dags"), loader.load("second", tmp_path / "dags")
        assert (first.name, second.name) == ("first", "second")
        assert first.module == second.module and first.module.endswith(".multi")

    def test_private_modules_are_skipped(self, tmp_path: Path) -> None:
        self.write(tmp_path / "dags", "_helpers", MULTI)
        assert loader.discover(tmp_path / "dags") == []

    def test_folders_of_the_same_name_do_not_clash(self, tmp_path: Path) -> None:
        self.write(tmp_path / "a" / "dags", "one", MULTI)
        self.write(tmp_path / "b" / "dags", "two", MULTI.replace('"first"', '"other"'))
        one = loader.load("first", tmp_path / "a" / "dags")
        two = loader.load("other", tmp_path / "b" / "dags")
        assert one.module.split(".")[0] != two.module.split(".")[0]
        assert two["a"].fn is not one["a"].fn

    def test_folder_with_an_init_module(self, tmp_path: Path) -> None:
        self.write(tmp_path / "flows", "__init__", "SHARED = 7\n")
        self.write(tmp_path / "flows", "uses_init", MULTI.replace("yield 1", "from . import SHARED\n    yield SHARED"))
        pipeline = loader.load("first", tmp_path / "flows")
        assert list(pipeline["a"].fn()) == [7]

    def test_keyword_name(self, tmp_path: Path) -> None:
        self.write(
            tmp_path / "dags",
            "module",
            'from pipelines import Pipeline\n\nkw = Pipeline(name="kw")\n\n\n@kw.source\ndef numbers():\n    yield 1\n',
        )
        assert [i.name for i in loader.discover(tmp_path / "dags")] == ["kw"]
        assert loader.load("kw", tmp_path / "dags").name == "kw"


MULTI = '''"""Two pipelines in one module."""
from collections.abc import Iterator

from pipelines import Pipeline

first = Pipeline("first")
second = Pipeline("second")


@first.source
def a() -> Iterator[int]:
    yield 1


@second.source
def b() -> Iterator[int]:
    yield 2
'''


# -- valid shapes -------------------------------------------------------------------------------------


def diamond() -> Pipeline:
    """numbers -> (double, square) -> both: fan-out and fan-in."""
    pipeline = Pipeline("diamond")

    @pipeline.source
    def numbers() -> Iterator[int]:
        yield from range(4)

    @pipeline.map(over=numbers)
    def double(x: int) -> int:
        return 2 * x

    pipeline.map(square, over=numbers, kind="io")

    @pipeline.reduce(inputs=[square, double])
    def both(double, square):  # names, not positions, pick the inputs
        return double

    return pipeline


class TestValidShapes:
    def test_diamond(self) -> None:
        pipeline = diamond().validate()
        assert list(pipeline.stages) == ["numbers", "double", "square", "both"]
        assert pipeline["double"].inputs == ("numbers",)
        assert pipeline["square"].inputs == ("numbers",)
        assert pipeline["both"].inputs == ("square", "double")
        assert pipeline.downstream("numbers") == ["double", "square"]
        assert pipeline.downstream("both") == []
        assert pipeline.order() == ["numbers", "double", "square", "both"]

    def test_reduce_inputs_matched_by_parameter_name(self) -> None:
        stage = diamond()["both"]
        # inputs are (square, double); parameter 'square' takes square, 'double' takes double
        assert stage.input_args == ("square", "double")
        assert stage.granularity == "reduce"

    def test_positional_inputs_when_names_do_not_match(self) -> None:
        pipeline, numbers = with_source()
        pipeline.map(square, over=numbers)

        def pair(left, right):
            return left

        stage = pipeline.reduce(pair, inputs=[square, numbers])
        assert stage.input_args == ("left", "right")

    def test_decorator_returns_the_function_unchanged(self) -> None:
        pipeline, numbers = with_source()

        def triple(x: int) -> int:
            return 3 * x

        decorated = pipeline.map(over=numbers)(triple)
        assert decorated is triple
        assert triple(2) == 6
        assert pipeline["triple"].fn is triple

    def test_source_decorator_returns_the_function_unchanged(self) -> None:
        pipeline = Pipeline("p")

        def numbers() -> Iterator[int]:
            yield 1

        assert pipeline.source(numbers) is numbers

    def test_call_form_returns_a_stage(self) -> None:
        pipeline, numbers = with_source()
        stage = pipeline.map(square, over=numbers, retries=2, concurrency=4, kind="io", on_error="skip")
        assert isinstance(stage, Stage)
        assert (stage.name, stage.granularity, stage.kind, stage.retries, stage.concurrency, stage.on_error) == (
            "square",
            "map",
            "io",
            2,
            4,
            "skip",
        )
        assert stage.output_type is int
        assert stage.input_args == ("x",)

    def test_stage_is_frozen(self) -> None:
        pipeline, numbers = with_source()
        stage = pipeline.map(square, over=numbers)
        with pytest.raises(AttributeError):
            stage.retries = 3  # type: ignore[misc]

    @pytest.mark.parametrize("ref", ["function", "stage", "name"])
    def test_references_by_function_stage_or_name(self, ref: str) -> None:
        pipeline, numbers = with_source()
        first = pipeline.map(square, over=numbers)
        over = {"function": square, "stage": first, "name": "square"}[ref]

        def half(x: int) -> float:
            return x / 2

        assert pipeline.map(half, over=over).inputs == ("square",)
        assert pipeline.validate().order() == ["numbers", "square", "half"]

    def test_forward_reference_by_name(self) -> None:
        pipeline, numbers = with_source()

        def half(x: int) -> float:
            return x / 2

        pipeline.map(half, over="square")  # square is defined on the next line
        pipeline.map(square, over=numbers)
        assert pipeline.order() == ["numbers", "square", "half"]

    def test_order_is_topological_and_stable(self) -> None:
        pipeline = Pipeline("p")

        def late(x):
            return x

        pipeline.map(late, over="b", name="c")
        pipeline.map(late, over="a", name="b")

        @pipeline.source
        def a() -> Iterator[int]:
            yield 1

        pipeline.map(late, over="a", name="d")
        # b and d are ready together after a: definition order breaks the tie (b was defined first)
        assert pipeline.order() == ["a", "b", "d", "c"]

    def test_async_function_is_io(self) -> None:
        pipeline, numbers = with_source()

        async def fetch(x: int) -> str:
            return str(x)

        stage = pipeline.map(fetch, over=numbers)
        assert (stage.kind, stage.is_async) == ("io", True)

    def test_flat_map_element_type_from_iterator(self) -> None:
        pipeline, numbers = with_source()

        def explode(x: int) -> Iterator[str]:
            yield str(x)

        assert pipeline.flat_map(explode, over=numbers).output_type is str

    def test_fixed_arguments_fill_parameters(self) -> None:
        pipeline, numbers = with_source()

        def scale(x: int, factor: int) -> int:
            return x * factor

        stage = pipeline.map(scale, over=numbers, factor=3)
        assert stage.kwargs == {"factor": 3}
        assert stage.input_args == ("x",)

    def test_side_input_fills_a_parameter(self) -> None:
        pipeline, numbers = with_source()
        pipeline.map(square, over=numbers)

        def share(x: int, square) -> float:
            return x

        stage = pipeline.map(share, over=numbers, side=[square])
        assert stage.side == ("square",)
        assert stage.upstream == ("numbers", "square")

    def test_docstring_first_line(self) -> None:
        pipeline, numbers = with_source()

        def documented(x: int) -> int:
            """Double it.

            More words.
            """
            return 2 * x

        assert pipeline.map(documented, over=numbers).doc == "Double it."

    def test_description_defaults_to_module_docstring(self) -> None:
        pipeline = Pipeline("p")
        assert (
            pipeline.description_line() == "Pipeline definitions: every definition error names its stage; "
            "valid shapes build as declared."
        )


# -- parameters ----------------------------------------------------------------------------------------------


class Params(BaseModel):
    limit: int = Field(10, ge=0)
    name: str = "x"
    tags: list[str] = []
    ratio: float = 0.5
    flag: bool = False
    mapping: dict[str, int] = {}


class TestParams:
    @pytest.fixture
    def pipeline(self) -> Pipeline:
        pipeline = Pipeline("pp", params=Params)

        @pipeline.source
        def numbers(params: Params) -> Iterator[int]:
            yield from range(params.limit)

        return pipeline

    def test_source_may_take_params(self, pipeline: Pipeline) -> None:
        assert pipeline["numbers"].takes_params

    def test_defaults(self, pipeline: Pipeline) -> None:
        assert pipeline.parse_params(None) == Params()
        assert pipeline.parse_params({}) == Params()

    def test_model_instance_passes_through(self, pipeline: Pipeline) -> None:
        given = Params(limit=3)
        assert pipeline.parse_params(given) is given

    def test_cli_strings_are_json_for_non_str_fields(self, pipeline: Pipeline) -> None:
        parsed = pipeline.parse_params(
            {"limit": "5", "tags": '["a", "b"]', "ratio": "1e-3", "flag": "true", "mapping": '{"a": 1}'}
        )
        assert parsed == Params(limit=5, tags=["a", "b"], ratio=0.001, flag=True, mapping={"a": 1})

    def test_str_field_keeps_json_looking_text(self, pipeline: Pipeline) -> None:
        assert pipeline.parse_params({"name": "5"}).name == "5"  # type: ignore[union-attr]
        assert pipeline.parse_params({"name": "[1, 2]"}).name == "[1, 2]"  # type: ignore[union-attr]
        assert pipeline.parse_params({"name": "null"}).name == "null"  # type: ignore[union-attr]

    def test_unknown_key_suggests_the_field(self, pipeline: Pipeline) -> None:
        with pytest.raises(ParamError, match=r"pipeline 'pp' has no parameter 'limt' \(did you mean 'limit'\?\)"):
            pipeline.parse_params({"limt": "5"})

    @pytest.mark.parametrize(("key", "value"), [("limit", "five"), ("limit", "-1"), ("limit", "2.5"), ("tags", "abc")])
    def test_invalid_value_names_the_field(self, pipeline: Pipeline, key: str, value: str) -> None:
        with pytest.raises(ParamError, match=rf"invalid parameters for pipeline 'pp': {key}: "):
            pipeline.parse_params({key: value})

    def test_pipeline_without_params_rejects_any(self) -> None:
        pipeline, _ = with_source()
        assert pipeline.parse_params(None) is None
        with pytest.raises(ParamError, match=r"pipeline 'p' takes no parameters, got: limit"):
            pipeline.parse_params({"limit": "1"})

    def test_optional_str_field_takes_digit_text(self) -> None:
        class Labelled(BaseModel):
            label: str | None = None

        pipeline = Pipeline("labelled", params=Labelled)
        assert pipeline.parse_params({"label": "123"}) == Labelled(label="123")

    def test_path_field_takes_digit_text(self) -> None:
        class Out(BaseModel):
            out: Path = Path(".")

        pipeline = Pipeline("out", params=Out)
        assert pipeline.parse_params({"out": "2024"}) == Out(out=Path("2024"))

    def test_literal_of_text_takes_digit_text(self) -> None:
        class Pick(BaseModel):
            which: Literal["1", "2"] = "1"

        assert Pipeline("pick", params=Pick).parse_params({"which": "2"}) == Pick(which="2")

    def test_literal_and_enum_of_numbers_take_json(self) -> None:
        class Level(enum.Enum):
            LOW = 1
            HIGH = 2

        class Pick(BaseModel):
            which: Literal[1, 2] = 1
            level: Level = Level.LOW

        parsed = Pipeline("pick", params=Pick).parse_params({"which": "2", "level": "2"})
        assert parsed == Pick(which=2, level=Level.HIGH)

    def test_optional_and_nested_containers_take_json(self) -> None:
        class Inner(BaseModel):
            a: int

        class Nested(BaseModel):
            ids: list[int] | None = None
            inner: Inner | None = None
            when: dt.date | None = None

        pipeline = Pipeline("nested", params=Nested)
        assert pipeline.parse_params({"ids": "[1, 2]", "inner": '{"a": 3}', "when": "2024-05-01"}) == Nested(
            ids=[1, 2], inner=Inner(a=3), when=dt.date(2024, 5, 1)
        )
        assert pipeline.parse_params({"inner": "null"}) == Nested()

    def test_null_is_none_only_where_text_would_not_do(self) -> None:
        class Maybe(BaseModel):
            count: int | None = 1
            label: str | None = None

        pipeline = Pipeline("maybe", params=Maybe)
        assert pipeline.parse_params({"count": "null", "label": "null"}) == Maybe(count=None, label="null")
