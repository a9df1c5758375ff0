"""One side of the memory workload, in a process of its own so its peak memory is its own.

    python -m bench.memory_child anchor PATH          # the hand-written loop
    python -m bench.memory_child pipelines PATH STORE # bench/dags/jsonl.py

Prints one JSON line: events and value sums per category.
"""

from __future__ import annotations

import json
import sys


def anchor(path: str) -> dict[str, list[float]]:
    import pandas as pd

    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            records.append(json.loads(line))
    frame = pd.DataFrame(records)
    summary = frame.groupby("category").agg(
        events=("id", "count"), value_sum=("value", "sum"), value_mean=("value", "mean")
    )
    return {k: [int(r.events), float(r.value_sum)] for k, r in summary.iterrows()}


def with_pipelines(path: str, store: str) -> dict[str, list[float]]:
    import pipelines

    from .harness import load_pipeline

    result = pipelines.run(load_pipeline("bench_jsonl"), {"path": path}, store=store)
    if not result.ok:
        raise SystemExit(f"run {result.status.value}: {result.error}")
    table = result.table("by_category").to_pydict()
    return {
        k: [int(n), float(s)] for k, n, s in zip(table["category"], table["events"], table["value_sum"], strict=True)
    }


def main(argv: list[str]) -> int:
    which, path = argv[0], argv[1]
    out = anchor(path) if which == "anchor" else with_pipelines(path, argv[2])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
