"""Ray remote: estimate pi from random points in the unit square, one seeded sample per Ray task.

Replaces ``@ray.remote`` functions and ``ray.get`` over their object refs::

    import random

    import ray


    @ray.remote
    def count_inside(seed, samples=100_000):
        rng = random.Random(seed)
        return sum(rng.random() ** 2 + rng.random() ** 2 < 1.0 for _ in range(samples))


    ray.init()
    counts = ray.get([count_inside.remote(seed) for seed in range(16)])
    print(4 * sum(counts) / (16 * 100_000))

with one declaration: ``executor="ray"`` runs the stage as Ray tasks, on a private local Ray
the run starts (and stops) itself, on the Ray this process already has, or on a cluster
(``--address``); the function stays a plain function you can call and test::

    @pipeline.map(over=seeds, executor="ray")
    def count_inside(seed: int, params: Params) -> Sample: ...

Each sample has its own seed, so the estimate is the same however the samples are spread
over workers. Ray binds to every network interface, even locally: on a machine others can
reach, run it inside a namespace with only loopback, as the tests do (as root)::

    python tests/loopback_only.py python -m pipelines run ray_remote

Run:    python -m pipelines run ray_remote --param seeds=64
"""

from __future__ import annotations

import dataclasses
import random

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from pipelines import Pipeline


class Params(BaseModel):
    """Parameters of the ray_remote pipeline (``--param name=value``)."""

    seeds: int = Field(16, ge=1, description="independent samples: seeds 0, 1, ..., seeds-1")
    samples: int = Field(100_000, ge=1, description="random points per sample")


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """How many of one seed's points fell inside the quarter circle."""

    seed: int
    inside: int


pipeline = Pipeline("ray_remote", params=Params)


@pipeline.source
def seeds(params: Params) -> range:
    """One seed per sample."""
    return range(params.seeds)


@pipeline.map(over=seeds, executor="ray")
def count_inside(seed: int, params: Params) -> Sample:
    """Draw ``samples`` points with this seed; count those inside the quarter circle."""
    rng = random.Random(seed)
    return Sample(seed, sum(rng.random() ** 2 + rng.random() ** 2 < 1.0 for _ in range(params.samples)))


@pipeline.reduce(inputs=[count_inside])
def estimate(counts: pa.Table, params: Params) -> pa.Table:
    """Pi, as four times the share of points inside."""
    inside = pc.sum(counts["inside"]).as_py()
    points = counts.num_rows * params.samples
    return pa.table({"points": [points], "inside": [inside], "pi": [4 * inside / points]})
