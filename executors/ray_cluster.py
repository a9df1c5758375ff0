"""Ray backend: a local Ray instance, or an existing cluster at ``address``.

Without ``address`` the executor starts a private Ray instance with ``ray.init(address="local")``
(never joining whatever ``/tmp/ray/ray_current_cluster`` points at), ``max_workers`` CPUs, no
dashboard, and its own temporary directory, removed on shutdown. With ``address`` it connects
to a running cluster (``host:6379`` or ``ray://host:10001``). If Ray is already initialised in
this process (a notebook, a test session), the executor uses that Ray and leaves it running
(an ``address`` of another cluster is then an error: a process holds one Ray connection).

Ray binds its processes to every interface of the machine, so token authentication (on by
default for local instances in Ray 2.60) is left as ``RAY_AUTH_MODE`` says; tests run Ray
inside a network namespace that has only loopback, where ``RAY_AUTH_MODE=disabled`` is safe.
What Ray prints while it starts shows only with ``-v`` (see ``executors.ray_output``).

Every task runs one remote function (``executors.base.call``, so async callables are awaited
on the worker) named after the caller's key, which the Ray dashboard shows. ``ObjectRef.future()``
gives the ``concurrent.futures`` future. Ray does not retry a task here (``max_retries=0``):
the caller decides. A task's exception comes back as its own type, its ``__cause__`` holding the
worker's traceback text (as ``concurrent.futures`` process pools do); a dead worker or node
gives ``WorkerLostError``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_for
from typing import Any, TypeVar

import ray
import ray.exceptions as rex

from . import _futures, ray_output
from .base import Capabilities, ExecutorBase, call
from .errors import ClusterUnreachableError, ExecutorError, WorkerLostError

T = TypeVar("T")
logger = logging.getLogger(__name__)

# Failures of the machinery under a task, not of the task itself.
_LOST = (
    rex.WorkerCrashedError,
    rex.NodeDiedError,
    rex.LocalRayletDiedError,
    rex.OutOfMemoryError,
    rex.ObjectLostError,
    rex.RayActorError,
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the worker's name in tracebacks


class RemoteTraceback(Exception):
    """The worker's formatted traceback, chained as ``__cause__`` of a task's exception."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


class RayExecutor(ExecutorBase):
    """Args:
        max_workers: CPUs of the local Ray instance (default: CPU count). With ``address``
            or an already initialised Ray, ignored: the cluster's CPU count is used.
        address: a running Ray cluster to connect to.
        temp_dir: the local instance's session folder (default: a fresh temporary one,
            removed on shutdown unless the ``executors`` loggers show DEBUG, ``-vv``; a folder
            given here is kept, logs and all).
        connect_timeout: seconds to wait for ``address`` to accept a connection.

    Example:
        >>> with RayExecutor(max_workers=2) as ex:
        ...     ex.submit(os.getpid, key="pid").result() != os.getpid()
        True
    """

    name = "ray"

    def __init__(
        self,
        max_workers: int | None = None,
        address: str | None = None,
        temp_dir: str | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        super().__init__()
        workers = max_workers or os.cpu_count() or 1
        self.capabilities = Capabilities(in_process=False, runs_coroutines=False, distributed=True, max_workers=workers)
        self.address = address
        self.temp_dir = temp_dir
        self._connect_timeout = connect_timeout
        self._owns_ray = False
        self._own_temp_dir: str | None = None
        self._pending: dict[Future[Any], ray.ObjectRef[Any]] = {}
        self._pending_lock = threading.Lock()

    def _start(self) -> None:
        if ray.is_initialized():
            current = ray.get_runtime_context().gcs_address
            if self.address and not _same_cluster(self.address, current):
                raise ExecutorError(
                    f"Ray is already initialised in this process (cluster {current}); "
                    f"it cannot also join {self.address}"
                )
        else:
            if self.address:
                _check_reachable(self.address, self._connect_timeout)
                with ray_output.held_start():
                    ray.init(address=self.address, logging_level=ray_output.python_level())
            else:
                temp_dir = self.temp_dir or tempfile.mkdtemp(prefix="pipelines-ray-")
                self._own_temp_dir = None if self.temp_dir else temp_dir
                try:
                    with ray_output.held_start():
                        ray.init(
                            address="local",
                            num_cpus=self.capabilities.max_workers,
                            include_dashboard=False,
                            _temp_dir=temp_dir,
                            logging_level=ray_output.python_level(),
                        )
                except BaseException:
                    self._remove_temp_dir()
                    raise
            self._owns_ray = True
        cpus = int(ray.cluster_resources().get("CPU", 0)) or self.capabilities.max_workers
        self.capabilities = Capabilities(in_process=False, runs_coroutines=False, distributed=True, max_workers=cpus)

    def _submit(self, fn: Callable[[], T], key: str) -> Future[T]:
        ref = _remote_call().options(name=key).remote(fn)
        outer: Future[T] = _futures.LinkedFuture()  # the driver cannot tell queued from running
        with self._pending_lock:
            self._pending[outer] = ref
        ref.future().add_done_callback(lambda inner: self._relay(inner, outer))
        return outer

    def _relay(self, inner: Future[Any], outer: Future[Any]) -> None:
        with self._pending_lock:
            self._pending.pop(outer, None)
        try:
            if inner.cancelled():
                _futures.cancel(outer)
                return
            exc = inner.exception()
            if exc is None:
                _futures.set_result(outer, inner.result())
            elif isinstance(exc, rex.RayTaskError):
                _futures.set_exception(outer, _task_exception(exc))
            elif isinstance(exc, rex.TaskCancelledError):
                _futures.cancel(outer)
            elif isinstance(exc, _LOST):
                lost = WorkerLostError(f"worker died ({type(exc).__name__}): {_first_line(exc)}")
                lost.__cause__ = exc
                _futures.set_exception(outer, lost)
            else:
                _futures.set_exception(outer, exc)
        except BaseException as exc:  # never leave ``outer`` pending: its waiter would hang
            _futures.set_exception(outer, exc)
            raise

    def run_on_every_worker(self, fn: Callable[[], Any], *, timeout: float = 120) -> dict[str, Any]:
        """Run ``fn`` once on every alive node of the cluster (e.g. to check it reaches the store)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
        refs = {
            node: _remote_call()
            .options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False))
            .remote(fn)
            for node in nodes
        }
        try:
            return {node: ray.get(ref, timeout=timeout) for node, ref in refs.items()}
        except rex.RayTaskError as exc:
            raise _task_exception(exc) from None

    def _shutdown(self, wait: bool, cancel_pending: bool) -> None:
        with self._pending_lock:
            pending = dict(self._pending)
        if cancel_pending:
            for outer, ref in pending.items():
                _futures.cancel(outer)
                ray.cancel(ref, force=True)  # a running task's worker is killed
        elif wait:
            wait_for(list(pending))
        if self._owns_ray:
            ray.shutdown()
            self._remove_temp_dir()

    def _remove_temp_dir(self) -> None:
        if self._own_temp_dir:
            if ray_output.logs_kept():
                logger.debug("Ray's session folder (its processes' logs) is kept: %s", self._own_temp_dir)
            else:
                shutil.rmtree(self._own_temp_dir, ignore_errors=True)
            self._own_temp_dir = None


_remote: Any = None
_remote_lock = threading.Lock()


def _remote_call() -> Any:
    """``executors.base.call`` as a Ray remote function, made once per process."""
    global _remote
    with _remote_lock:
        if _remote is None:
            _remote = ray.remote(num_cpus=1, max_retries=0)(call)
        return _remote


def _task_exception(error: rex.RayTaskError) -> BaseException:
    """The task's own exception, with the worker's traceback text as its ``__cause__``."""
    cause = getattr(error, "cause", None)
    if not isinstance(cause, BaseException) or isinstance(cause, rex.RayError):
        return error  # the exception could not be pickled; Ray's text says what it was
    # ``str`` of Ray's error is the worker's traceback, Ray's internal frames left out.
    cause.__cause__ = RemoteTraceback(_ANSI.sub("", str(error)))
    return cause


def _check_reachable(address: str, timeout: float) -> None:
    """Fail fast, naming the address, instead of Ray's long retry loop."""
    if address == "auto":
        return  # "auto" finds a local cluster
    target = address
    if address.startswith("ray://"):  # Ray Client: check its server's port (it would retry ~30 s)
        target = address.removeprefix("ray://").split("/", 1)[0]
    elif "://" in address:
        return
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise ClusterUnreachableError(f"cannot reach the Ray cluster at {address} within {timeout:g} s: {exc}") from exc


def _same_cluster(address: str, gcs_address: str) -> bool:
    if address == "auto" or "://" in address:
        return True  # cannot tell; Ray itself chose or will choose
    try:
        return {_resolve(address)} == {_resolve(gcs_address)}
    except (OSError, ValueError):
        return address == gcs_address


def _resolve(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return socket.gethostbyname(host or "127.0.0.1"), int(port)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
