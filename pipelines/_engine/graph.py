"""The shape of one run, computed once: who consumes whom, which stages follow a source batch
by batch, where item ids come from, and which stages share an executor slot.

Pure: built from the pipeline and its plan, it never changes during the run, so the runner's
collaborators (``feed``, ``recovery``, ``keys``) can share it without sharing state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines._engine.plan import Plan
    from pipelines.define.model import Pipeline, Stage


class RunGraph:
    """Consumers, side users, source streams, id origins and slots of a validated pipeline."""

    def __init__(self, pipeline: Pipeline, plan: Plan) -> None:
        self.stages: Mapping[str, Stage] = pipeline.stages
        self.order: list[str] = list(plan.order)
        self.rank = {name: i for i, name in enumerate(self.order)}
        self.consumers: dict[str, list[str]] = {n: [] for n in self.order}
        self.side_users: dict[str, list[str]] = {n: [] for n in self.order}
        for c in self.order:
            for u in self.stages[c].inputs:
                self.consumers[u].append(c)
            for u in self.stages[c].side:
                self.side_users[u].append(c)
        self.on_slot: dict[str, list[str]] = {slot: [] for slot in plan.executors}
        for n, sp in plan.stages.items():
            if sp.slot is not None:
                self.on_slot[sp.slot].append(n)
        self.streams = {n: self._stream_of(n) for n in self.order if self.stages[n].granularity == "source"}
        self.sources_of = {n: [s for s, stream in self.streams.items() if n in stream] for n in self.order}
        self.origins = self._origins()

    def leaves(self) -> tuple[str, ...]:
        """Stages no other stage reads: what a run is for."""
        return tuple(n for n in self.order if not self.consumers[n] and not self.side_users[n])

    def with_dependents(self, chosen: set[str]) -> set[str]:
        """``chosen`` and every stage downstream of it."""
        out = set(chosen)
        for name in self.order:  # topological: upstream decisions are made first
            if any(u in out for u in self.stages[name].upstream):
                out.add(name)
        return out

    def _stream_of(self, source: str) -> list[str]:
        """Stages whose batch k follows the source's batch k (all but reduce stages and beyond)."""
        out, frontier = [source], [source]
        while frontier:
            for c in self.consumers[frontier.pop()]:
                if self.stages[c].granularity != "reduce" and c not in out:
                    out.append(c)
                    frontier.append(c)
        return out

    def _origins(self) -> dict[str, str]:
        """For item-wise stages whose input ids are source positions: that source."""
        ids_from: dict[str, str | None] = {}  # stage -> the source its output ids are positions of
        origins = {}
        for name in self.order:  # topological: inputs first
            stage = self.stages[name]
            up = ids_from.get(stage.inputs[0]) if stage.inputs else None
            ids_from[name] = name if stage.granularity == "source" else (up if stage.granularity == "map" else None)
            if stage.itemwise and up is not None:
                origins[name] = up
        return origins
