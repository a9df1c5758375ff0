"""Shared state: tally the bundled data files by type on threads, with no shared dict and no lock.

Replaces ``threading.Thread`` workers that update a shared table under a ``Lock``::

    import threading
    from pathlib import Path

    paths = [path for path in sorted(Path("data").rglob("*")) if path.is_file()]
    totals = {}  # suffix -> (files, bytes), shared by every thread
    lock = threading.Lock()


    def worker(some_paths):
        for path in some_paths:
            size = len(path.read_bytes())  # blocking IO: other threads run meanwhile
            with lock:  # without it, two threads may read the same entry, and one update is lost
                files, total = totals.get(path.suffix, (0, 0))
                totals[path.suffix] = (files + 1, total + size)


    threads = [threading.Thread(target=worker, args=(paths[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(sorted(totals.items()))

Without the lock it is a race: whether an update is lost depends on where the interpreter
switches threads (on free-threaded Python, on nothing at all), so tests rarely catch it.
With one declaration the worker just returns its values, and a reduce adds them up once
every item is done: nothing is shared, so there is nothing to lock and nothing to lose, and
the same code runs on processes, where a shared dict would not even be shared::

    @pipeline.map(over=paths, kind="io", concurrency=4)
    def measure(name: str, params: Params) -> Measured: ...

Run:    python -m pipelines run shared_state --param folder=path/to/folder
"""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, Field

from pipelines import Pipeline
from stages import aggregate, files

BUNDLED = Path(__file__).resolve().parent.parent / "data"


class Params(BaseModel):
    """Parameters of the shared_state pipeline (``--param name=value``)."""

    folder: str | None = Field(None, description="the folder to tally, subfolders included; None: the bundled data/")


@dataclasses.dataclass(frozen=True, slots=True)
class Measured:
    """One file's name, type (its suffix) and size as read."""

    name: str
    suffix: str
    bytes: int


pipeline = Pipeline("shared_state", params=Params)


def folder_of(params: Params) -> Path:
    """The folder the run reads: ``folder``, or the bundled one."""
    return Path(params.folder) if params.folder is not None else BUNDLED


@pipeline.source
def paths(params: Params) -> list[str]:
    """Every file under the folder, by relative name."""
    return files.list_files(folder_of(params), "**/*")


@pipeline.map(over=paths, kind="io", concurrency=4)
def measure(name: str, params: Params) -> Measured:
    """Read one file (blocking IO) and return its size; no shared state."""
    size = len(files.read_bytes(name, root=folder_of(params)))
    return Measured(name, PurePosixPath(name).suffix, size)


by_suffix = pipeline.reduce(
    aggregate.summarize,
    inputs=[measure],
    name="by_suffix",
    by="suffix",
    aggregations={"files": ("name", "count"), "bytes": ("bytes", "sum")},
)
