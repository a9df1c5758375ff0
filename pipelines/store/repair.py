"""Rebuilding the ledger from the part files, which describe themselves.

Every part file carries its batch key, stage, batch, part number, item ids and its own
checksum in its Arrow metadata (see ``arrow.py``). ``rebuild`` walks ``runs/`` and records
every file the ledger does not know and that verifies against itself: its object, its part,
and, for runs the ledger has lost, a run row (status ``rebuilt``) with its stages and the
batches it wrote. A rerun then finds every verified part under its key and reuses it.

What the files cannot tell is not invented: a rebuilt run lists only the batches whose files
it wrote itself (not those it reused from earlier runs). Its parameters, options and the
place of its pipeline come from its manifest (``manifest.py``, ``runs/<run>/run.json``), so
it can be resumed; a run without one can be inspected and its work reused, not resumed.
Failed items are not rebuilt: a rerun computes them again. Files without metadata (written
by older versions) and damaged files are reported and left alone (``gc`` removes them).

It runs when a store is opened without its ledger (missing, or damaged and set aside), and
as ``python -m pipelines repair``, which also adopts the parts a lost ``-wal`` forgot.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines._engine.idset import IdSet
from pipelines.errors import CheckpointError
from pipelines.store import arrow as batch_files
from pipelines.store import listing, manifest

if TYPE_CHECKING:
    from pipelines.store.ledger import Ledger

logger = logging.getLogger(__name__)
RESERVED = ("outputs", "dead_letter")  # run folders that hold no parts


@dataclass(slots=True)
class RepairReport:
    """What ``rebuild`` found: parts adopted, files it could not use, runs it recreated."""

    scanned: int = 0
    adopted: int = 0
    known: int = 0
    runs: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # fail their checksum or do not parse
    unknown: list[str] = field(default_factory=list)  # no part metadata (older files)
    seconds: float = 0.0

    def summary(self) -> str:
        text = (
            f"{self.adopted:,} part file(s) adopted, {self.known:,} already known, {len(self.runs):,} run(s) recreated"
        )
        if self.damaged:
            text += f", {len(self.damaged):,} damaged file(s) left out"
        if self.unknown:
            text += f", {len(self.unknown):,} file(s) without part metadata left out"
        return text


def is_part(entry: listing.Entry) -> bool:
    """``runs/<run>/<stage>/<file>.arrow``, not an output, dead letter or temp file."""
    bits = entry.parts
    return len(bits) == 4 and bits[0] == "runs" and bits[2] not in RESERVED and bits[3].endswith(".arrow")


def read_part(data_root: str, entry: listing.Entry) -> tuple[dict[str, Any], str, int]:
    """A part file's metadata, checksum and rows, verified against itself.

    Raises:
        CheckpointError: the file is damaged (naming it), or carries no part metadata.
    """
    path = listing.path_of(data_root, entry.rel)
    table = batch_files.read_table(path, raw=True)  # verifies the carried checksum
    meta = batch_files.part_info(table)
    crc = batch_files.carried_checksum(table)
    if meta is None or not meta.get("key") or not crc:
        raise LookupError(path)
    return meta, crc, table.num_rows


def rebuild(ledger: Ledger, data_root: str) -> RepairReport:
    """Record every verified part file under ``data_root`` the ledger does not know."""
    started = time.monotonic()
    report = RepairReport()
    known = {row["path"] for row in ledger.query("SELECT path FROM parts")}
    have_runs = {row["id"] for row in ledger.query("SELECT id FROM runs")}
    adopted: list[tuple[listing.Entry, dict[str, Any], str, int]] = []
    for entry in listing.walk(data_root):
        if not is_part(entry):
            continue
        report.scanned += 1
        if entry.rel in known:
            report.known += 1
            continue
        try:
            adopted.append((entry, *read_part(data_root, entry)))
        except CheckpointError:
            report.damaged.append(entry.rel)
        except (LookupError, ValueError):
            report.unknown.append(entry.rel)
    _record(ledger, data_root, adopted, have_runs, report)
    report.adopted = len(adopted)
    report.seconds = time.monotonic() - started
    return report


def _record(
    ledger: Ledger,
    data_root: str,
    adopted: list[tuple[listing.Entry, dict[str, Any], str, int]],
    have_runs: set[str],
    report: RepairReport,
) -> None:
    runs: dict[str, dict[str, Any]] = {}
    batches: dict[tuple[str, str, int], dict[str, Any]] = {}
    with ledger.transaction() as db:
        for entry, meta, crc, rows in adopted:
            run_id, stage = entry.parts[1], entry.parts[2]
            done = IdSet.from_json(meta.get("ids"))
            db.execute(
                "INSERT OR IGNORE INTO objects (key, stage, fingerprint, batch, created) VALUES (?, ?, ?, ?, ?)",
                (meta["key"], stage, None, meta.get("batch"), entry.mtime),
            )
            db.execute(
                "INSERT OR REPLACE INTO parts (key, path, done, rows, bytes, checksum, first, run_id, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    meta["key"],
                    entry.rel,
                    done.to_json(),
                    rows,
                    entry.size,
                    crc,
                    done.first() if done else -1,
                    run_id,
                    entry.mtime,
                ),
            )
            if run_id in have_runs:
                continue
            run = runs.setdefault(
                run_id,
                {
                    "pipeline": None,
                    "started": entry.mtime,
                    "ended": entry.mtime,
                    "stages": defaultdict(set),
                    "first": {},
                },
            )
            run["pipeline"] = run["pipeline"] or meta.get("pipeline")
            run["started"] = min(run["started"], entry.mtime)
            run["ended"] = max(run["ended"], entry.mtime)
            run["stages"][stage].add(meta.get("batch", 0))
            run["first"][stage] = min(run["first"].get(stage, entry.mtime), entry.mtime)
            b = batches.setdefault((run_id, stage, meta.get("batch", 0)), {"key": meta["key"], "rows": 0})
            b["rows"] += rows
        for run_id, run in sorted(runs.items()):
            found = manifest.read(data_root, run_id)
            db.execute(
                "INSERT OR IGNORE INTO runs (id, pipeline, module, dags_dir, params, status, started, ended, items,"
                " message, options) VALUES (?, ?, ?, ?, ?, 'rebuilt', ?, ?, 0, ?, ?)",
                (
                    run_id,
                    found.get("pipeline") or run["pipeline"] or "?",
                    found.get("module"),
                    found.get("dags_dir"),
                    found.get("params"),
                    run["started"],
                    run["ended"],
                    "rebuilt from its part files after the ledger was lost"
                    + ("" if found else " (no manifest: its parameters are unknown)"),
                    json.dumps(found.get("options") or {}),
                ),
            )
            for stage in sorted(run["stages"], key=run["first"].__getitem__):  # upstream stages write first
                ks = run["stages"][stage]
                db.execute(
                    "INSERT OR IGNORE INTO run_stages (run_id, stage, status, batches) VALUES (?, ?, 'rebuilt', ?)",
                    (run_id, stage, len(ks)),
                )
            report.runs.append(run_id)
        for (run_id, stage, k), b in batches.items():
            db.execute(
                "INSERT OR IGNORE INTO run_batches (run_id, stage, batch, key, status, rows, failed)"
                " VALUES (?, ?, ?, ?, 'done', ?, 0)",
                (run_id, stage, k, b["key"], b["rows"]),
            )
