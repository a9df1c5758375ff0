"""Finding pipelines: dags modules, by name, with clear errors.

A dags folder (``./dags``, ``--dags DIR`` or ``$PIPELINES_DAGS``) is imported as a package
named after the folder, so ``dags/ingest.py`` is the module ``dags.ingest`` whether or not
the folder has an ``__init__.py``. Workers in other processes find a stage the same way: a
``PipelineHandle`` names the module, the package folder and the pipeline, and the worker
imports it (no pickled functions, so the spawn start method works and no ``__main__``
guard is needed). A pipeline that lives in no importable module (defined in a function or a
script) travels by value instead, pickled with cloudpickle.

``discover`` reads modules with ``ast`` without importing them, so ``list`` stays fast.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.util
import os
import sys
import threading
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines import settings
from pipelines.errors import DefinitionError, LoadError

if TYPE_CHECKING:
    from pipelines.define.model import Pipeline

_lock = threading.RLock()
_packages: dict[str, str] = {}  # package name -> folder
_resolved: dict[object, Pipeline] = {}


def dags_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder to search: ``--dags``, else ``$PIPELINES_DAGS``, else ``./dags``."""
    return Path(explicit or settings.dags()).absolute()


def _base_name(directory: Path) -> str:
    return directory.name if directory.name.isidentifier() else "dags"


def package_name(directory: Path) -> str:
    """The package name a dags folder is imported as: its own name when that is free."""
    base = _base_name(directory)
    with _lock:
        taken = _packages.get(base)
        existing = sys.modules.get(base)
        existing_path = list(getattr(existing, "__path__", []) or [])
        if taken in (None, str(directory)) and (existing is None or str(directory) in existing_path):
            return base
        if taken is None and existing is None:
            return base
    return f"{base}_{hashlib.blake2b(str(directory).encode(), digest_size=3).hexdigest()}"


def ensure_package(name: str, directory: str | os.PathLike[str]) -> None:
    """Make ``name`` an importable package over ``directory`` (idempotent)."""
    directory = str(directory)
    with _lock:
        module = sys.modules.get(name)
        if module is not None and directory in list(getattr(module, "__path__", []) or []):
            _packages[name] = directory
            return
        init = Path(directory) / "__init__.py"
        if init.exists():
            spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[directory])
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            module = types.ModuleType(name, f"pipelines dags folder {directory}")
            module.__path__ = [directory]
            module.__package__ = name
            sys.modules[name] = module
        _packages[name] = directory


def canonical_module(module_name: str) -> str:
    """``module_name`` as it would be named had its dags folder been imported first.

    A dags folder whose name was taken by another one is imported as ``dags_1a2b3c``; which of
    the two gets the plain name depends on what the process imported before (a command-line
    run imports one folder, a test session several). Code identity uses this name so that it
    does not depend on that order.
    """
    top, dot, rest = module_name.partition(".")
    with _lock:
        folder = _packages.get(top)
    if folder is None:
        return module_name
    return _base_name(Path(folder)) + dot + rest


@dataclass(frozen=True, slots=True)
class PipelineInfo:
    """A pipeline found in a dags folder without importing it."""

    name: str
    path: Path
    doc: str


def discover(directory: Path) -> list[PipelineInfo]:
    """Pipelines declared in ``directory/*.py`` (by ``Pipeline("name", ...)`` or ``Pipeline(name=...)`` calls)."""
    found: list[PipelineInfo] = []
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, OSError):
            found.append(PipelineInfo(path.stem, path, "(cannot be parsed; `show` tells why)"))
            continue
        doc = (ast.get_docstring(tree) or "").strip().splitlines()
        names = [
            name
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and _called_name(node.func) == "Pipeline"
            and (name := _pipeline_name(node)) is not None
        ]
        for name in names:
            found.append(PipelineInfo(name, path, doc[0] if doc else ""))
    return found


def _pipeline_name(call: ast.Call) -> str | None:
    """The literal name in ``Pipeline("name", ...)`` or ``Pipeline(name="name", ...)``."""
    given = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "name"), None)
    if isinstance(given, ast.Constant) and isinstance(given.value, str):
        return given.value
    return None


def _called_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def load(name: str, directory: str | os.PathLike[str] | None = None) -> Pipeline:
    """Import the dags module that defines pipeline ``name`` and return it, validated.

    Raises:
        LoadError: no such pipeline (with "did you mean"), or its module fails to import.
        DefinitionError: the module imports but its pipeline is not a valid DAG.
    """
    folder = dags_dir(directory)
    infos = discover(folder)
    candidates = [i.path for i in infos if i.name == name]
    if not candidates and (folder / f"{name}.py").exists():
        candidates = [folder / f"{name}.py"]
    if not candidates:
        known = sorted({i.name for i in infos})
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where = f"in {_display(folder)}" if folder.is_dir() else f"({_display(folder)} does not exist; use --dags DIR)"
        listing = f"; known: {', '.join(known)}" if known and not close else ""
        raise LoadError(f"no pipeline named {name!r} {where}{hint}{listing}")
    _beside(folder)
    module = import_dags_module(candidates[0], folder)
    return find_pipeline(module, name)


def _beside(folder: Path) -> None:
    """Make the modules beside the dags folder importable (``dags/x.py`` doing ``import mylib``),
    wherever the command runs from, as they are when it runs from the project's folder."""
    parent = str(folder.parent)
    if parent not in sys.path:
        sys.path.append(parent)


def import_dags_module(path: Path, folder: Path) -> types.ModuleType:
    package = package_name(folder)
    ensure_package(package, folder)
    module_name = f"{package}.{path.stem}"
    try:
        return importlib.import_module(module_name)
    except DefinitionError:
        raise
    except SyntaxError as exc:
        raise LoadError(f"{_display(Path(exc.filename or path))}, line {exc.lineno}: {exc.msg}") from exc
    except SystemExit as exc:  # sys.exit() at import would end the command silently, with its code
        frame = _last_frame_in(exc, path)
        where = f"{_display(path)}, line {frame}" if frame else _display(path)
        raise LoadError(
            f"{where}: importing {module_name} called sys.exit({exc.code!r}); a dags module "
            f"must not exit when it is imported"
        ) from exc
    except Exception as exc:  # any failure at import is the module's fault
        frame = _last_frame_in(exc, path)
        where = f"{_display(path)}, line {frame}" if frame else _display(path)
        raise LoadError(f"{where}: importing {module_name} failed: {type(exc).__name__}: {exc}") from exc


def _last_frame_in(exc: BaseException, path: Path) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    return line


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def find_pipeline(module: types.ModuleType, name: str | None = None) -> Pipeline:
    from pipelines.define.model import Pipeline

    pipelines = [v for v in vars(module).values() if isinstance(v, Pipeline) and (name is None or v.name == name)]
    if not pipelines:
        defined = sorted(v.name for v in vars(module).values() if isinstance(v, Pipeline))
        known = f"; it defines: {', '.join(defined)}" if defined else ""
        raise LoadError(f"module {module.__name__} defines no Pipeline{f' named {name!r}' if name else ''}{known}")
    return pipelines[0].validate()


# -- handles: how a worker finds the pipeline -------------------------------------------------


@dataclass(frozen=True, slots=True)
class PipelineHandle:
    """What a worker needs to find a pipeline: a module path, or the pipeline pickled by value."""

    name: str
    module: str | None = None
    package: tuple[str, str] | None = None  # (package name, folder) to register first
    pickled: bytes | None = None
    digest: str = ""

    def resolve(self) -> Pipeline:
        key: object = self.digest if self.pickled is not None else (self.module, self.name, self.package)
        with _lock:
            cached = _resolved.get(key)
        if cached is not None:
            return cached
        if self.pickled is not None:
            import cloudpickle

            pipeline: Pipeline = cloudpickle.loads(self.pickled)
        else:
            if self.package is not None:
                ensure_package(*self.package)
            assert self.module is not None
            pipeline = find_pipeline(importlib.import_module(self.module), self.name)
        with _lock:
            _resolved[key] = pipeline
        return pipeline


def pipeline_in_module(module: str, name: str) -> Pipeline:
    """Pipeline ``name`` from ``module``: a module name, or a ``.py`` file (imported by its name,
    its folder put on ``sys.path`` so that workers import it the same way)."""
    if module.endswith(".py") or os.sep in module:
        path = Path(module).absolute()
        if not path.is_file():
            raise LoadError(f"--module {module}: no such file")
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        module = path.stem
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        raise LoadError(f"--module {module}: cannot import it: {exc}") from None
    return find_pipeline(imported, name)


def importable(pipeline: Pipeline) -> bool:
    """A worker can import ``pipeline`` by its module's name: the module is not the main script
    and holds this very pipeline at its top level."""
    module = sys.modules.get(pipeline.module)
    return (
        module is not None
        and pipeline.module not in ("__main__", "__mp_main__")
        and any(v is pipeline for v in vars(module).values())
    )


def handle_for(pipeline: Pipeline) -> PipelineHandle:
    """A handle to ``pipeline``: by module path when a worker can import it, else by value."""
    if importable(pipeline):
        top = pipeline.module.split(".")[0]
        package = (top, _packages[top]) if top in _packages else None
        handle = PipelineHandle(pipeline.name, module=pipeline.module, package=package)
    else:
        import cloudpickle

        data = cloudpickle.dumps(pipeline)
        handle = PipelineHandle(pipeline.name, pickled=data, digest=hashlib.blake2b(data, digest_size=16).hexdigest())
    with _lock:
        _resolved[handle.digest if handle.pickled is not None else (handle.module, handle.name, handle.package)] = (
            pipeline
        )
    return handle
