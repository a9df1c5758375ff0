"""Store upkeep commands: ``gc`` (retention and cleanup) and ``repair`` (rebuild the ledger).

The work is done in ``store/gc.py`` and ``store/repair.py``; this module parses nothing and
prints: what went (or would go, with ``--dry-run``), with sizes, and the store's size.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.store import Store


def human(size: float) -> str:
    """``12.3 MB``: bytes in decimal units, as ``du -h --si`` shows them."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def store_size(store: Store) -> tuple[int, int]:
    """(bytes, files) of the store: its run files plus its ledger."""
    from pipelines.store import listing

    size = files = 0
    for entry in listing.walk(store.data_root):
        size += entry.size
        files += 1
    for name in ("ledger.sqlite", "ledger.sqlite-wal"):
        with contextlib.suppress(OSError):
            size += os.path.getsize(store.root / name)
    return size, files


def size_line(store: Store) -> str:
    size, files = store_size(store)
    return f"store {store.data_root}: {human(size)} in {files:,} file(s)"


def add_commands(sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    """The ``gc`` and ``repair`` subcommands (called by ``cli.build_parser``)."""
    gc = sub.add_parser(
        "gc",
        parents=[common],
        help="drop old runs and files no run needs",
        description="Remove runs beyond the retention rules, then every file no ledger record "
        "needs (orphan parts and temp files left by kills). Running runs are never "
        "touched. With both rules, a run goes only if both let it go.",
    )
    gc.add_argument("--keep-runs", type=int, metavar="N", help="keep the N newest runs of each pipeline")
    gc.add_argument("--older-than", metavar="AGE", help="drop runs started longer ago than AGE (30d, 12h, 90m)")
    gc.add_argument("--dry-run", action="store_true", help="list what would go, with sizes; change nothing")
    sub.add_parser(
        "repair",
        parents=[common],
        help="rebuild the ledger's index of part files from the files",
        description="Record every part file the ledger does not know and that verifies against its "
        "own checksum (after a lost ledger or WAL); list damaged files.",
    )


def cmd_gc(args: argparse.Namespace) -> int:
    from pipelines.observe.report import console, print_table
    from pipelines.store import Store
    from pipelines.store.gc import collect, parse_age

    older = parse_age(args.older_than) if args.older_than is not None else None
    out = console()
    with Store(args.store) as store:
        found = collect(store, keep_runs=args.keep_runs, older_than=older, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        if found.deferred:
            out.print(f"retention skipped: {found.deferred}", markup=False)
        if found.skipped:
            out.print(f"left alone (running): {', '.join(found.skipped)}", markup=False)
        if args.dry_run and found.files:
            print_table(
                [{"file": d.rel, "size": human(d.bytes), "why": d.why} for d in found.files],
                ["file", "size", "why"],
                out=out,
            )
        reasons: dict[str, list[int]] = defaultdict(list)
        for d in found.files:
            reasons[d.why.split(" ", 2)[0] if d.why.startswith("run ") else d.why].append(d.bytes)
        runs = f"{len(found.runs)} run(s) ({', '.join(found.runs)})" if found.runs else "no runs"
        out.print(f"{verb} {runs}, {len(found.files):,} file(s), {human(found.bytes)}", markup=False)
        for why, sizes in sorted(reasons.items()):
            label = "files of dropped runs" if why == "run" else why
            out.print(f"  {label}: {len(sizes):,} file(s), {human(sum(sizes))}", markup=False)
        out.print(size_line(store), markup=False)
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from pipelines.observe.report import console
    from pipelines.store import Store
    from pipelines.store.repair import rebuild

    out = console()
    with Store(args.store) as store:
        report = store.repaired or rebuild(store.ledger, store.data_root)
        out.print(f"repair: scanned {report.scanned:,} part file(s): {report.summary()}", markup=False)
        for rel in report.damaged[:20]:
            out.print(f"  damaged: {rel}", markup=False)
        for rel in report.unknown[:20]:
            out.print(f"  no part metadata: {rel}", markup=False)
    return 0
