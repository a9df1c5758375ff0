"""Which part files a task reads: its producers' parts, by batch, then in item order.

The driver names the files; the worker reads them (``inputs.py``). Parts are listed in the
order a reader wants them, so a batch whose parts came back in item order needs no sort.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from pipelines._engine.inputs import InputPart, InputSpec
from pipelines.store.outputs import parts_in_order

if TYPE_CHECKING:
    from pipelines._engine.idset import IdSet
    from pipelines._engine.state import StageState
    from pipelines.define.model import Stage


class TaskInputs:
    """The inputs of a task, from the run's state (which parts each batch has)."""

    def __init__(self, stages: Mapping[str, Stage], states: dict[str, StageState]) -> None:
        self.stages = stages
        self.states = states

    def parts_of(self, name: str, batches: Iterable[int] | None = None) -> tuple[InputPart, ...]:
        """The stage's part files in item order: by batch, then by first id (no sort when read)."""
        st = self.states[name]
        ks = sorted(st.batches) if batches is None else batches
        return tuple(InputPart(p.path, batch=k) for k in ks for p in parts_in_order(st.batches[k].parts))

    def for_table(self, name: str, k: int) -> tuple[InputSpec, ...]:
        """A batch or reduce stage's task: the whole batch ``k`` of its input, or all of every input."""
        stage = self.stages[name]
        if stage.granularity == "reduce":
            return tuple(InputSpec(u, self.parts_of(u), False) for u in stage.inputs)
        u = stage.inputs[0]
        return (InputSpec(u, self.parts_of(u, [k]), self.stages[u].keeps_item_ids),)

    def for_items(self, name: str, k: int, ids: IdSet) -> tuple[InputSpec, ...]:
        """An item stage's task: only the parts of batch ``k`` that hold ``ids``."""
        u = self.stages[name].inputs[0]
        keeps = self.stages[u].keeps_item_ids
        parts = [p for p in parts_in_order(self.states[u].batches[k].parts) if not keeps or p.done & ids]
        return (InputSpec(u, tuple(InputPart(p.path, batch=k) for p in parts), keeps, ids),)
