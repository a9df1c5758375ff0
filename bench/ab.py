"""A/B of two source trees: the same probe under each, side by side, alternating order.

    python -m bench.ab --a /path/to/old/tree --b . --rounds 5 tiny
    python -m bench.ab --a OLD --b NEW cpu cli10 warm

Every measurement is a fresh interpreter whose ``PYTHONPATH`` and working directory are one
tree (so each side imports its own ``pipelines``); rounds alternate A-B, B-A, ... so that a
busy machine is shared by both sides. Printed: each round's figures with the load average,
then per probe the medians and the ratio A ÷ B (> 1: B is faster). The probes themselves are
in ``ab_probe.py``, run by path, so a tree that predates them can still be measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).with_name("ab_probe.py")


def measure(tree: Path, probe: str, extra: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run(
        [sys.executable, str(PROBE), probe, *extra], cwd=tree, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{probe} under {tree} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, type=Path, help="the old tree")
    parser.add_argument("--b", required=True, type=Path, help="the new tree")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--arg", action="append", default=[], help="passed to the probe (e.g. --arg n=100000)")
    parser.add_argument("probes", nargs="+", help=", ".join(_probe_names()))
    args = parser.parse_args(argv)
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    for probe in args.probes:
        got: dict[str, list[dict]] = {"A": [], "B": []}
        for r in range(args.rounds):
            order = ["A", "B"] if r % 2 == 0 else ["B", "A"]
            for side in order:
                load = os.getloadavg()[0]
                out = measure(trees[side], probe, args.arg)
                out["load"] = load
                got[side].append(out)
                figures = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in out.items())
                print(f"{probe} round {r + 1} {side}: {figures}", flush=True)
        a = statistics.median(x["seconds"] for x in got["A"])
        b = statistics.median(x["seconds"] for x in got["B"])
        ratios = [x["seconds"] / y["seconds"] for x, y in zip(got["A"], got["B"], strict=True)]
        print(
            f"== {probe}: A median {a:.4f} s, B median {b:.4f} s, A/B {a / b:.3f} "
            f"(per-round ratios {', '.join(f'{q:.2f}' for q in ratios)}; median {statistics.median(ratios):.3f})",
            flush=True,
        )
        if all("cpu" in x for x in got["A"] + got["B"]):
            ca = statistics.median(x["cpu"] for x in got["A"])
            cb = statistics.median(x["cpu"] for x in got["B"])
            print(
                f"== {probe} CPU (driver + reaped workers): A {ca:.3f} s, B {cb:.3f} s, A/B {ca / cb:.3f}", flush=True
            )
    return 0


def _probe_names() -> list[str]:
    text = PROBE.read_text()
    return [line.split("def probe_")[1].split("(")[0] for line in text.splitlines() if line.startswith("def probe_")]


if __name__ == "__main__":
    raise SystemExit(main())
