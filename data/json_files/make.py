"""Write the JSON files of this folder: data/cars.json cut into files of 8 records each.

The records are copied unchanged (same keys, same values, same order); only the cut is
ours. cars.json's licence applies (see data/LICENSES.md). Rerunning it rewrites the same
bytes: ``python data/json_files/make.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDS_PER_FILE = 8


def main() -> None:
    cars = json.loads((HERE.parent / "cars.json").read_bytes())
    for old in HERE.glob("cars-*.json"):
        old.unlink()
    for number, start in enumerate(range(0, len(cars), RECORDS_PER_FILE)):
        chunk = cars[start : start + RECORDS_PER_FILE]
        lines = ",\n".join(json.dumps(record, ensure_ascii=False) for record in chunk)
        (HERE / f"cars-{number:03d}.json").write_text(f"[\n{lines}\n]\n", encoding="utf-8")


if __name__ == "__main__":
    main()
