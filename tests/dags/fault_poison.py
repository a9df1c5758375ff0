"""Fault poison: items that kill their worker process, chosen by FAULT_POISON.

FAULT_POISON is a comma list of ``ITEM:HOW`` with HOW one of ``exit`` (``os._exit(3)``),
``segv`` (reads address 0), ``kill`` (SIGKILL to itself, as the OOM killer would) and
``raise`` (an ordinary exception, for contrast). Every call logs ``ITEM PID`` to FAULT_LOG.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Iterator

from pydantic import BaseModel

from pipelines import Pipeline


class Params(BaseModel):
    n: int = 60


pipeline = Pipeline("fault_poison", params=Params)


def poison() -> dict[int, str]:
    out = {}
    for entry in os.environ.get("FAULT_POISON", "").split(","):
        if entry.strip():
            item, how = entry.split(":")
            out[int(item)] = how
    return out


@pipeline.source(batch_size=20)
def numbers(params: Params) -> Iterator[int]:
    yield from range(params.n)


@pipeline.map(over=numbers, kind="cpu", on_error="skip")
def risky(x: int) -> int:
    path = os.environ.get("FAULT_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{x} {os.getpid()}\n")
    how = poison().get(x)
    if how == "exit":
        os._exit(3)
    elif how == "segv":
        ctypes.string_at(0)
    elif how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "raise":
        raise RuntimeError(f"item {x} raised")
    return 10 * x
