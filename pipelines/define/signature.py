"""How a stage function's signature binds to a pipeline: which parameters receive the inputs,
``params``, side inputs, resources and fixed arguments; what a table input is wanted as;
which type the function returns. Read from the signature and annotations when the stage is
declared, so a mismatch is a ``DefinitionError`` on import, naming the stage."""

from __future__ import annotations

import collections.abc
import inspect
import typing
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel

from pipelines.define import codec
from pipelines.define.checks import did_you_mean
from pipelines.errors import ArityError, DefinitionError

Granularity = Literal["source", "map", "flat_map", "batch", "reduce"]
TableFormat = Literal["arrow", "pandas", "list"]
PARAMS_ARG = "params"


def bind(
    fn: Callable[..., Any],
    where: str,
    granularity: Granularity,
    inputs: tuple[str, ...],
    side: tuple[str, ...],
    resources: Mapping[str, Any],
    kwargs: Mapping[str, Any],
    params_model: type[BaseModel] | None,
    options: Mapping[str, Callable[[Any], bool]] | None = None,
) -> tuple[tuple[str, ...], bool, Literal["arrow", "pandas", "list"]]:
    """Match the function's parameters to inputs, params, side inputs, resources and kwargs.

    Returns the parameter names receiving the inputs (in input order), whether it takes
    ``params``, and whether table inputs are wanted as pandas. Raises ``ArityError``, with
    "did you mean" for a fixed argument that looks like a misspelt parameter, or a misspelt
    stage option whose value would suit it (``options``: name to a check of the value).
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ArityError(f"{where}: cannot read the signature of {fn!r}: {exc}") from None
    params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    accepts_any_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    names = {p.name for p in params}
    for key, value in kwargs.items():
        if key not in names and not accepts_any_kw:
            fitting = [option for option, fits in (options or {}).items() if fits(value)]
            raise ArityError(
                did_you_mean(
                    f"{where}: {getattr(fn, '__name__', fn)}() has no parameter {key!r} for the fixed argument",
                    key,
                    [*fitting, *sorted(names)],
                )
            )
    for name in (*side, *resources):
        if name not in names and not accepts_any_kw:
            raise ArityError(f"{where}: {getattr(fn, '__name__', fn)}() needs a parameter named {name!r} to receive it")
    takes_params = PARAMS_ARG in names
    if takes_params and params_model is None and PARAMS_ARG not in kwargs:
        raise ArityError(f"{where}: the function takes 'params' but the pipeline has no params model")
    taken = {*kwargs, *side, *resources} | ({PARAMS_ARG} if takes_params else set())
    free = [p for p in params if p.name not in taken]
    positional = [p for p in free if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if granularity == "source":
        input_args: tuple[str, ...] = ()
    elif granularity == "reduce" and all(n in names for n in inputs):
        input_args = inputs  # reduce inputs matched by name: def report(parse, describe)
    else:
        if len(positional) < len(inputs):
            wanted = "one argument per input" if len(inputs) > 1 else "an argument for its input"
            raise ArityError(
                f"{where}: {getattr(fn, '__name__', fn)}{sig} needs {wanted} "
                f"({', '.join(map(repr, inputs))}), but has {len(positional)} free positional parameter(s)"
            )
        input_args = tuple(p.name for p in positional[: len(inputs)])
    rest = [p for p in free if p.name not in input_args and p.default is p.empty]
    if rest:
        raise ArityError(
            f"{where}: parameter(s) {', '.join(repr(p.name) for p in rest)} of "
            f"{getattr(fn, '__name__', fn)}() receive nothing; give a default, a fixed argument or a resource"
        )
    table_format: Literal["arrow", "pandas", "list"] = "arrow"
    if granularity in ("batch", "reduce") and input_args:
        annotated = hints(fn)
        written = {p.name: p.annotation for p in params}  # the text, where a name cannot be resolved
        formats = {
            name: table_format_of(annotated.get(name, written.get(name)), f"{where}: parameter {name!r}")
            for name in input_args
        }
        if len(set(formats.values())) > 1:
            raise ArityError(
                f"{where}: its inputs are annotated as different kinds of table "
                f"({', '.join(f'{n}: {f}' for n, f in formats.items())}); annotate them alike"
            )
        table_format = formats[input_args[0]]
    return input_args, takes_params, table_format


def table_format_of(ann: Any, where: str) -> Literal["arrow", "pandas", "list"]:
    """What a batch or reduce stage's input parameter receives, from its annotation.

    ``pa.Table`` (or no annotation) gets the Arrow table, ``pd.DataFrame`` a DataFrame,
    ``list[T]`` the values as ``T``; anything else is refused here, when the pipeline is
    defined, rather than failing on a ``pyarrow.Table`` at run time.
    """
    if ann is None or ann is Any or ann is inspect.Parameter.empty:
        return "arrow"
    if isinstance(ann, str):  # an annotation naming what only a function's locals know: read its text
        text = ann.replace(" ", "")
        if text.startswith(("list[", "List[", "typing.List[", "Sequence[", "Iterable[")) or text in ("list", "List"):
            return "list"
        if text.endswith("DataFrame"):
            return "pandas"
        if text.endswith("Table"):
            return "arrow"
        raise ArityError(
            f"{where} is annotated {ann}, but it receives a whole table of values: annotate it "
            f"pa.Table, pd.DataFrame or list[T]"
        )
    origin = typing.get_origin(ann) or ann
    if origin is list or origin in (collections.abc.Sequence, collections.abc.Iterable):
        return "list"
    module = getattr(origin, "__module__", "") or ""
    if module.startswith("pandas"):
        return "pandas"
    if module.startswith("pyarrow"):
        if ann is not pa.Table:
            raise ArityError(f"{where} is annotated {getattr(ann, '__name__', ann)}; a whole input is a pa.Table")
        return "arrow"
    raise ArityError(
        f"{where} is annotated {getattr(ann, '__name__', ann)!s}, but it receives a whole table of "
        f"values: annotate it pa.Table, pd.DataFrame or list[T]"
    )


def hints(fn: Callable[..., Any]) -> dict[str, Any]:
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn).__call__
    try:
        return typing.get_type_hints(target)
    except Exception:
        return {}


_ITERABLES = (Iterator, Iterable, Generator, AsyncIterator, AsyncIterable, list, tuple)


def output_type(fn: Callable[..., Any], granularity: Granularity, where: str) -> Any:
    """The element type a stage produces, from its return annotation (``None``: infer)."""
    ret = hints(fn).get("return")
    if ret is None or ret is type(None):
        return None
    if granularity in ("source", "flat_map"):
        origin = typing.get_origin(ret)
        if origin in _ITERABLES or (isinstance(origin, type) and issubclass(origin, (Iterable, AsyncIterable))):
            args = typing.get_args(ret)
            ret = args[0] if args else None
        elif granularity == "flat_map":
            raise DefinitionError(f"{where}: a flat_map function returns an iterable of values, not {ret!r}")
        else:
            return None  # a source may return a table or a sequence: infer
    if ret is None:
        return None
    try:
        codec.arrow_type(ret)
    except TypeError as exc:
        raise DefinitionError(f"{where}: its output type cannot be stored as Arrow: {exc}") from None
    return ret
