"""Batch keys and reuse: what identifies a stage's batch, and what the ledger already holds.

    key(S, k) = hash(fingerprint(S), lineage of S's inputs for batch k, side inputs)

An input's lineage for an item-wise consumer is the producer batch's key when the producer
keeps item ids (its rows only ever get added, never renumbered); otherwise, and for batch
and reduce consumers, it is the producer batch's *content*: its key plus the exact set of
ids it holds. A key is therefore known as soon as the inputs' keys are, and a consumer of a
map can start before the map's batch is whole.

A ``reuse="never"`` stage is computed again in every run under the same keys, and may give
other values (what a URL serves today): its lineage is its output's content, known once its
batch is whole, so what follows it is reused exactly when it made the same values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipelines._engine import fingerprint as fp
from pipelines._engine import item_reuse
from pipelines._engine.idset import IdSet
from pipelines.observe.hooks import RunObserver
from pipelines.store import arrow as batch_files
from pipelines.store.ledger import Ledger, Part
from pipelines.store.outputs import distinct_parts

if TYPE_CHECKING:
    from pipelines._engine.state import BatchState, StageState
    from pipelines.define.model import Stage


class Keys:
    """Computes batch keys from the run's state, and finds reusable parts under them."""

    def __init__(
        self,
        stages: Mapping[str, Stage],
        states: dict[str, StageState],
        fingerprints: dict[str, str],
        ledger: Ledger,
        observer: RunObserver,
        fresh: set[str],
    ) -> None:
        self.stages = stages
        self.states = states
        self.fingerprints = fingerprints
        self.ledger = ledger
        self.observer = observer
        self.fresh = fresh
        self._outputs: dict[tuple[str, int], str] = {}

    def content(self, name: str, k: int) -> str:
        b = self.states[name].batches[k]
        if self.stages[name].reuse == "never" and b.final:
            found = self._outputs.get((name, k))
            if found is None:
                found = self._outputs[(name, k)] = fp.digest(
                    b.key, b.done.to_json(), item_reuse.output_digest(b.parts, k)
                )
            return found
        return fp.digest(b.key, b.done.to_json())

    def lineage(self, name: str, k: int) -> str | None:
        """What identifies producer ``name``'s batch ``k`` for an item-wise consumer (None: not yet)."""
        b = self.states[name].batches.get(k)
        if b is None or b.key is None:
            return None
        if self.stages[name].keeps_item_ids and self.stages[name].reuse != "never":
            return b.key
        return self.content(name, k) if b.final else None

    def _side(self, stage: Stage) -> list[str] | None:
        out: list[str] = []
        for side in stage.side:
            st = self.states[side]
            if not st.final:
                return None
            out.extend(self.content(side, k) for k in sorted(st.batches))
        return out

    def key_for(self, name: str, k: int) -> str | None:
        """Batch ``k``'s key, or ``None`` while its inputs are not far enough along."""
        stage = self.stages[name]
        side = self._side(stage)
        if side is None:
            return None
        if stage.granularity == "reduce":
            ups = [self.content(u, j) for u in stage.inputs for j in sorted(self.states[u].batches)]
        elif stage.granularity == "batch":
            ups = [self.content(stage.inputs[0], k)]
        else:
            lineage = self.lineage(stage.inputs[0], k)
            if lineage is None:
                return None
            ups = [lineage]
        return fp.batch_key(self.fingerprints[name], [*ups, *side])

    def reuse(self, name: str, k: int, b: BatchState) -> IdSet:
        """Adopt the whole parts stored under ``b.key``; return the ids they cover."""
        assert b.key is not None
        if name in self.fresh:
            self.ledger.forget_object(b.key)
            return IdSet()
        parts: list[Part] = []
        for part in distinct_parts(self.ledger.parts(b.key)):
            problem = batch_files.verify(part.info)
            if problem:
                self.observer.message(
                    f"stage {name!r} batch {k}: checkpoint {part.path} is {problem}; recomputing it", level="warning"
                )
                self.ledger.forget_part(part.key, part.path)
                continue
            parts.append(part)
        if not parts:
            return IdSet()
        b.parts = parts
        b.reused_parts = len(parts)
        b.next_part = 1 + max((_part_number(p.path) for p in parts), default=-1)
        done = IdSet()
        for part in parts:
            done = done | part.done
        b.done = done
        b.rows = sum(p.rows for p in parts)
        return done


def change_reason(parts: dict[str, str], prev: Any, *, fresh: bool, resumed: bool) -> str:
    """Why a stage would be computed, against its last run ("" when nothing changed): its
    fingerprint ``parts`` against that run's stage row ``prev``."""
    if fresh:
        return "--fresh"
    if resumed:
        return ""  # a resume computes what is unfinished
    if prev is None:
        return "new"
    for part, label in (("code", "code changed"), ("config", "definition changed"), ("params", "params changed")):
        if prev[f"{part}_fp"] != parts[part]:
            return label
    return ""


def _part_number(path: str) -> int:
    stem = os.path.basename(path.split("?")[0]).rsplit(".", 1)[0]
    try:
        return int(stem.rsplit("-", 1)[-1])
    except ValueError:
        return 0
