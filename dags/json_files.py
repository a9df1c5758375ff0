"""JSON files: parse every JSON file in a folder in parallel and sum the cars' values per origin.

Replaces parsing files on a process pool and summing the records by hand::

    import json
    from collections import defaultdict
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path


    def parse(path):
        return json.loads(path.read_bytes())


    if __name__ == "__main__":
        weight = defaultdict(int)  # origin -> total weight
        with ProcessPoolExecutor() as pool:
            for cars in pool.map(parse, sorted(Path("data/json_files").glob("*.json"))):
                for car in cars:
                    weight[car["Origin"]] += car["Weight_in_lbs"]
        print(sorted(weight.items()))

with one declaration per step; the one that replaces the pool parses a file into validated
records (a bad record stops the run with an error naming the file, the record and the field;
``on_error="skip"`` would leave that file out instead)::

    @pipeline.flat_map(over=json_files, kind="cpu")
    def parse(file: files.FileRef, params: Params) -> list[Car]: ...

The source is ``files.source``: each file is a ``FileRef``, its name with its size and
modification time, so a rerun reuses the parsed records while no file changed, and parses
again only the files that did. Each file is a batch of its own (``batch_size=1``): parsing a
file is a task worth its checkpoint, and an edited file then touches nothing but its own
records. The bundled folder holds ``data/cars.json`` cut into 51 files
(``data/json_files/make.py``).

Run:    python -m pipelines run json_files --param folder=path/to/folder
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pydantic import BaseModel, Field

from pipelines import Pipeline
from stages import aggregate, files, json

BUNDLED = Path(__file__).resolve().parent.parent / "data" / "json_files"


class Params(BaseModel):
    """Parameters of the json_files pipeline (``--param name=value``)."""

    folder: str | None = Field(None, description="the folder of *.json files; None: the bundled data/json_files/")


class Car(BaseModel):
    """One record of cars.json, under Python names."""

    name: str = Field(alias="Name")
    miles_per_gallon: float | None = Field(alias="Miles_per_Gallon")
    cylinders: int = Field(alias="Cylinders")
    displacement: float = Field(alias="Displacement")
    horsepower: int | None = Field(alias="Horsepower")
    weight_lbs: int = Field(alias="Weight_in_lbs")
    acceleration: float = Field(alias="Acceleration")
    year: dt.date = Field(alias="Year")
    origin: str = Field(alias="Origin")


pipeline = Pipeline("json_files", params=Params)


def folder_of(params: Params) -> Path:
    """The folder the run reads: ``folder``, or the bundled one."""
    return Path(params.folder) if params.folder is not None else BUNDLED


json_files = pipeline.source(files.source("*.json", root=folder_of), name="json_files", batch_size=1)


@pipeline.flat_map(over=json_files, kind="cpu")
def parse(file: files.FileRef, params: Params) -> list[Car]:
    """Parse one file's array of cars; an invalid record fails this file, naming the record and field."""
    return json.parse_records(files.read_bytes(file, root=folder_of(params)), Car, source=file.path)


by_origin = pipeline.reduce(
    aggregate.summarize,
    inputs=[parse],
    name="by_origin",
    by="origin",
    aggregations={
        "cars": ("name", "count"),
        "weight_lbs": ("weight_lbs", "sum"),
        "horsepower": ("horsepower", "sum"),
        "with_horsepower": ("horsepower", "count"),
    },
)
