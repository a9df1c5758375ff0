"""Fingerprints: what makes a stored batch valid for reuse.

stage fingerprint  = hash(code, config, params) where
    code   = the stage function's bytecode and constants, and, recursively, those of the
             module-level functions and classes of user code it references (so an edit in a
             helper counts, a comment or a moved line does not);
    config = granularity, fixed keyword arguments, declared output type, input wiring;
    params = the parameter fields the stage reads (``paramreads``: ``params.folder`` in its
             code and in the helpers it passes ``params`` to), or the whole model where
             reading the code cannot tell.
batch key          = hash(stage fingerprint, the lineage ids of its input batches).

Code is named by what it is, never by how this process happened to import it: a dags
folder imported under a fallback name (``dags_1a2b3c``, its own name being taken) and a
script run as ``__main__`` are named as a command-line run would name them, so an
in-process run and a command-line run of one pipeline reuse each other's work.

"User code" is any module outside the standard library and site-packages, plus this
project's ``stages`` library: upgrading pandas does not invalidate a run, editing
``stages/images.py`` does.
"""

from __future__ import annotations

import contextlib
import dis
import functools
import hashlib
import inspect
import json
import os
import sys
import sysconfig
import types
from collections.abc import Iterable
from typing import Any

from pipelines._engine import paramreads
from pipelines.define.loader import canonical_module

_LIB_DIRS = tuple(
    os.path.realpath(p) + os.sep
    for p in {sysconfig.get_paths().get(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    if p
)
_ALWAYS_USER = ("stages", "dags")


def digest(*parts: Any) -> str:
    """A short stable hex digest of strings, bytes and JSON-able values."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, bytes):
            data = part
        elif isinstance(part, str):
            data = part.encode()
        else:
            data = json.dumps(part, sort_keys=True, default=repr).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _is_user_module(module_name: str | None) -> bool:
    if not module_name or module_name == "builtins":
        return False
    if module_name.split(".")[0] in _ALWAYS_USER or module_name in ("__main__", "__mp_main__"):
        return True
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if not path:
        return False
    path = os.path.realpath(path)
    if f"{os.sep}site-packages{os.sep}" in path or f"{os.sep}dist-packages{os.sep}" in path:
        return False
    return not path.startswith(_LIB_DIRS)


def module_identity(module_name: str | None) -> str:
    """The name a module's code is known by, whatever name this process imported it under."""
    if not module_name:
        return ""
    if module_name in ("__main__", "__mp_main__"):
        module = sys.modules.get(module_name)
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.name not in ("__main__", "__mp_main__"):
            return canonical_module(spec.name)  # `python -m package.module`
        path = getattr(module, "__file__", None)
        return os.path.splitext(os.path.basename(path))[0] if path else module_name  # `python script.py`
    return canonical_module(module_name)


def code_fingerprint(obj: Any) -> str:
    """Digest of a callable's code and of the user-code helpers it references."""
    h = hashlib.blake2b(digest_size=16)
    _feed(h, obj, set())
    return h.hexdigest()


def _feed(h: Any, obj: Any, seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, functools.partial):
        h.update(b"partial")
        _feed(h, obj.func, seen)
        h.update(stable_repr((obj.args, sorted(obj.keywords.items()))).encode())
        return
    if inspect.ismethod(obj):
        _feed(h, obj.__func__, seen)
        return
    if inspect.isfunction(obj):
        h.update(f"{module_identity(obj.__module__)}.{obj.__qualname__}".encode())
        if not _is_user_module(obj.__module__):
            return
        _feed_code(h, obj.__code__)
        h.update(stable_repr(obj.__defaults__).encode() if _plain_data(obj.__defaults__) else b"")
        names = list(_global_names(obj.__code__))
        for name in names:
            if name in obj.__globals__:
                value = obj.__globals__[name]
                _feed_global(h, name, value, seen)
                if isinstance(value, types.ModuleType) and _is_user_module(value.__name__):
                    # `images.describe(...)`: attribute names are in co_names too; follow the ones
                    # that are functions or classes of that user module.
                    for attr in names:
                        member = getattr(value, attr, None)
                        if inspect.isfunction(member) or inspect.isclass(member):
                            _feed(h, member, seen)
        if obj.__closure__:
            for cell in obj.__closure__:
                with contextlib.suppress(ValueError):  # an empty cell has no contents
                    _feed_global(h, "<closure>", cell.cell_contents, seen)
        return
    if inspect.isclass(obj):
        h.update(f"{module_identity(obj.__module__)}.{obj.__qualname__}".encode())
        if _is_user_module(obj.__module__):
            for attr, value in sorted(vars(obj).items()):
                if inspect.isfunction(value) or isinstance(value, (staticmethod, classmethod)):
                    _feed(h, getattr(value, "__func__", value), seen)
                elif attr == "__annotations__" or _plain_data(value):
                    h.update(f"{attr}={stable_repr(value)}".encode())
        return
    if callable(obj):  # a callable instance: its class's code
        _feed(h, type(obj), seen)
        return
    h.update(repr(obj).encode())


def _feed_code(h: Any, code: types.CodeType) -> None:
    """The instructions, with the constants they load resolved to their values.

    Raw ``co_code`` and ``co_consts`` would not do: a function's docstring sits in its
    constants (as ``None`` where there is none) and shifts the indices the bytecode uses, so
    adding one would change the fingerprint. The docstring is never loaded by an instruction,
    so it drops out here, whatever the Python version.
    """
    for ins in dis.get_instructions(code):
        h.update(ins.opname.encode())
        if ins.opcode in _LOADS_CONST or isinstance(ins.argval, types.CodeType):
            if isinstance(ins.argval, types.CodeType):
                _feed_code(h, ins.argval)
            else:
                h.update(stable_repr(ins.argval).encode())
        elif ins.arg is not None:
            h.update(str(ins.arg).encode())
    h.update(repr(code.co_names).encode())


_LOADS_CONST = frozenset(dis.hasconst)


def stable_repr(value: Any) -> str:
    """``repr`` that is the same in every process: set members sorted (string hashing is
    salted per process, so ``{"a", "b"}`` prints in a different order in each)."""
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__}({{{', '.join(sorted(stable_repr(v) for v in value))}}})"
    if isinstance(value, tuple):
        return f"({''.join(stable_repr(v) + ', ' for v in value)})"
    if isinstance(value, list):
        return f"[{', '.join(stable_repr(v) for v in value)}]"
    if isinstance(value, dict):
        return f"{{{', '.join(f'{stable_repr(k)}: {stable_repr(v)}' for k, v in value.items())}}}"
    return repr(value)


def _global_names(code: types.CodeType) -> Iterable[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _global_names(const)


def _feed_global(h: Any, name: str, value: Any, seen: set[int]) -> None:
    if isinstance(value, types.ModuleType):
        if _is_user_module(value.__name__):
            h.update(f"module:{module_identity(value.__name__)}".encode())
        return
    if inspect.isfunction(value) or inspect.isclass(value) or isinstance(value, functools.partial):
        _feed(h, value, seen)
    elif _plain_data(value):
        h.update(f"{name}={stable_repr(value)}".encode())


def _plain_data(value: Any) -> bool:
    """Module constants that change results: numbers, strings, and containers of them."""
    if isinstance(value, (bool, int, float, complex, str, bytes, type(None))):
        return True
    if isinstance(value, (tuple, list, frozenset, set)):
        return len(value) < 1000 and all(_plain_data(v) for v in value)
    if isinstance(value, dict):
        return len(value) < 1000 and all(_plain_data(k) and _plain_data(v) for k, v in value.items())
    return False


# The words stage kinds had when fingerprints were first stored: hashing them keeps the
# fingerprints (and so the results stored under them) of existing stores valid.
FINGERPRINTED_GRANULARITY = {"map": "item", "flat_map": "flat", "reduce": "all"}


def stage_parts(stage: Any, params_json: str | None) -> dict[str, str]:
    """The three parts of a stage's fingerprint, kept apart to explain recomputation."""
    config = {
        "granularity": FINGERPRINTED_GRANULARITY.get(stage.granularity, stage.granularity),
        "inputs": list(stage.inputs),
        "side": list(stage.side),
        "input_args": list(stage.input_args),
        "output_type": repr(stage.output_type),
        "table_format": stage.table_format,
        "kwargs": {
            k: (code_fingerprint(v) if callable(v) else stable_repr(v)) for k, v in sorted(stage.kwargs.items())
        },
    }
    return {
        "code": code_fingerprint(stage.fn),
        "config": digest(config),
        "params": params_part(stage, params_json),
    }


def params_part(stage: Any, params_json: str | None) -> str:
    """The digest of the parameter fields ``stage`` reads ("" when it takes no params)."""
    if not stage.takes_params or params_json is None:
        return ""
    values = json.loads(params_json)
    read = params_read(stage, values)
    if read.fields is None:
        return digest(params_json)
    return digest({name: values[name] for name in sorted(read.fields)})


def params_read(stage: Any, fields: Iterable[str]) -> paramreads.Reads:
    """The fields of the params model (``fields``) that ``stage``'s function reads."""
    if "params" in stage.kwargs:  # a fixed argument, not the pipeline's params
        return paramreads.Reads(frozenset())
    return paramreads.reads(stage.fn).within(fields)


def stage_fingerprint(parts: dict[str, str]) -> str:
    return digest(parts["code"], parts["config"], parts["params"])


def batch_key(stage_fp: str, input_lineages: Iterable[str]) -> str:
    return digest(stage_fp, *input_lineages)
