"""A map whose output annotation Arrow cannot hold (a socket)."""

import socket
from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("bad_output")


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(3)


@pipeline.map(over=numbers, kind="io")
def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port))
