"""joblib Parallel: count the points of a grid inside the Mandelbrot set row by row with numpy, and its area.

Replaces ``joblib.Parallel(n_jobs=...)(delayed(f)(x) for x in ...)``::

    import numpy as np
    from joblib import Parallel, delayed


    def inside(row, size=500, iterations=200):
        c = np.linspace(-2.0, 1.0, size) + 1j * (-1.5 + 3.0 * row / (size - 1))
        z = np.zeros_like(c)
        bounded = np.ones(size, dtype=bool)
        for _ in range(iterations):
            z[bounded] = z[bounded] ** 2 + c[bounded]
            bounded &= np.abs(z) <= 2.0
        return int(bounded.sum())


    counts = Parallel(n_jobs=2)(delayed(inside)(row) for row in range(500))
    print(sum(counts))

with one declaration: ``executor="joblib"`` runs the stage on joblib's own worker processes
(loky's reusable pool, kept warm between runs, one worker per CPU)::

    @pipeline.map(over=rows, executor="joblib")
    def inside(row: int, params: Params) -> Row: ...

The grid is ``size`` x ``size`` points over [-2, 1] x [-1.5, 1.5]; a point is inside when
it stays within radius 2 for ``iterations`` steps.

Run:    python -m pipelines run joblib_parallel --param size=1000
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from pipelines import Pipeline


class Params(BaseModel):
    """Parameters of the joblib_parallel pipeline (``--param name=value``)."""

    size: int = Field(500, ge=2, description="grid points across and down")
    iterations: int = Field(200, ge=1, description="steps a point must stay bounded to count as inside")


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """How many points of one grid row are inside."""

    row: int
    inside: int


pipeline = Pipeline("joblib_parallel", params=Params)


@pipeline.source
def rows(params: Params) -> range:
    """The grid's row numbers."""
    return range(params.size)


@pipeline.map(over=rows, executor="joblib")
def inside(row: int, params: Params) -> Row:
    """Iterate one row of the grid with numpy; count the points that stay bounded."""
    size = params.size
    c = np.linspace(-2.0, 1.0, size) + 1j * (-1.5 + 3.0 * row / (size - 1))
    z = np.zeros_like(c)
    bounded = np.ones(size, dtype=bool)
    for _ in range(params.iterations):
        z[bounded] = z[bounded] ** 2 + c[bounded]
        bounded &= np.abs(z) <= 2.0
    return Row(row, int(bounded.sum()))


@pipeline.reduce(inputs=[inside])
def area(rows: pa.Table, params: Params) -> pa.Table:
    """The points inside, and the area they cover (each point stands for one grid cell)."""
    points = pc.sum(rows["inside"]).as_py()
    return pa.table({"inside": [points], "area": [points * (3.0 / (params.size - 1)) ** 2]})
