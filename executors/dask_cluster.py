"""Dask backend: a ``distributed`` cluster, local or existing, with its dashboard.

Without ``address`` the executor starts a ``LocalCluster`` on 127.0.0.1: one single-threaded
worker process per CPU (CPU-bound Python holds the GIL, so threads would not help), each
restarted by its nanny if it dies. The cluster speaks TLS with credentials made for it
(``dask_tls``): only clients holding them can connect and run code, where a plain Dask
cluster would run anyone's. The dashboard listens on 127.0.0.1:8787 when that port is free,
else on a free port, or on ``dashboard_address``; its URL is ``dashboard_link``. With
``address`` (``tls://host:8786`` or ``tcp://host:8786``) it connects to a running scheduler
and never closes it; a ``tls://`` scheduler needs credentials (``tls_dir``, or
``$PIPELINES_DASK_TLS``, or Dask's own TLS configuration).

Each task's Dask key is the caller's key plus a short unique token:
``describe-000003-00001-5f3a9c0``. Dask groups tasks by ``dask.utils.key_split`` of the key,
which stops at the first dash-separated word that is not purely alphabetic, so the dashboard's
task stream, progress bars and ``/metrics`` show one group per stage (``describe``), and
keys stay unique across runs on a long-lived cluster.

Distributed futures become ``concurrent.futures`` futures through ``add_done_callback`` (one
callback thread for the process, no thread per task). A task's exception arrives with its own
type and the worker's traceback; a worker that died under a task gives ``WorkerLostError``.
The local cluster's scheduler gives up on a task after its first worker death
(``allowed_failures=0``): the caller decides about retries, as with the process pool.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from typing import Any, TypeVar

import dask
import distributed
from distributed.scheduler import KilledWorker

from . import _futures, dask_tls
from ._lifeline import sigint_ignored
from ._main_guard import no_main_for
from .base import Capabilities, ExecutorBase, call
from .errors import ClusterUnreachableError, WorkerLostError

T = TypeVar("T")

DEFAULT_DASHBOARD = "127.0.0.1:8787"
KEEP_FINISHED = 20_000  # finished task results kept on the cluster for the dashboard's progress bars
NANNY_PROCESS = "Dask Worker process (from Nanny)"  # what distributed names the worker processes it starts


class DaskExecutor(ExecutorBase):
    """Args:
        max_workers: worker processes of the local cluster (default: CPU count). With
            ``address``, ignored: the cluster's thread count is used.
        address: a running scheduler to use instead of starting a local cluster.
        dashboard_address: where the local cluster's dashboard listens (``host:port``).
        keep_cluster: leave the local cluster and its dashboard up after ``shutdown()``,
            until ``wait_until_interrupted()`` or ``close()``.
        threads_per_worker: threads of each local worker (raise it for GIL-releasing work).
        connect_timeout: seconds to wait for the scheduler at ``address``.
        allowed_failures: worker deaths a task may cause on the local cluster before it fails.
        tls_dir: with ``address``, a folder of TLS credentials (``ca.pem``, ``cert.pem``,
            ``key.pem``) to join with (a pipeline run passes ``$PIPELINES_DASK_TLS``).

    Example:
        >>> with DaskExecutor(max_workers=2, dashboard_address="127.0.0.1:0") as ex:
        ...     print(ex.dashboard_link)
        ...     ex.submit(os.getpid, key="pid").result() != os.getpid()
        http://127.0.0.1:.../status
        True
    """

    name = "dask"

    def __init__(
        self,
        max_workers: int | None = None,
        address: str | None = None,
        dashboard_address: str | None = None,
        keep_cluster: bool = False,
        threads_per_worker: int = 1,
        connect_timeout: float = 5.0,
        allowed_failures: int = 0,
        tls_dir: str | None = None,
    ) -> None:
        super().__init__()
        workers = max_workers or os.cpu_count() or 1
        self.capabilities = Capabilities(
            in_process=False, runs_coroutines=False, distributed=True, max_workers=workers * threads_per_worker
        )
        self.address = address
        self.dashboard_address = dashboard_address
        self.keep_cluster = keep_cluster
        self.dashboard_link: str | None = None  # after start: the dashboard's URL, if it has one
        self.scheduler_address: str | None = None  # after start: where other clients can connect
        self.tls_dir: str | None = tls_dir  # the TLS credentials: made for a local cluster, or given to join one
        self.security: Any = None  # after start: the ``distributed.Security`` clients need (None: plain TCP)
        self._workers = workers
        self._threads_per_worker = threads_per_worker
        self._connect_timeout = connect_timeout
        self._allowed_failures = allowed_failures
        self._cluster: distributed.LocalCluster | None = None
        self._client: distributed.Client | None = None
        self._token = secrets.token_hex(3)
        self._counter = itertools.count()
        self._pending: dict[Future[Any], distributed.Future[Any]] = {}
        self._pending_lock = threading.Lock()
        # Finished tasks stay wanted (their results are small metadata): the dashboard's Progress
        # panel then counts them, and shows "describe 259/300", not only what is queued now.
        self._finished: collections.deque[distributed.Future[Any]] = collections.deque(maxlen=KEEP_FINISHED)
        self._released = threading.Event()
        self._close_lock = threading.Lock()
        self._own_credentials = False
        self._no_main = contextlib.ExitStack()

    # -- lifecycle ---------------------------------------------------------------------------
    def _start(self) -> None:
        if self.address:
            self.security = dask_tls.for_joining(self.address, self.tls_dir)
            self._client = _connect(self.address, self._connect_timeout, self.security)
            try:
                threads = sum(self._client.nthreads().values())
            except BaseException:
                self._client.close()
                raise
            self.capabilities = Capabilities(
                in_process=False, runs_coroutines=False, distributed=True, max_workers=max(1, threads)
            )
        else:
            self._start_local()
        assert self._client is not None and self._client.scheduler is not None
        self.scheduler_address = self._client.scheduler.address
        self.dashboard_link = _dashboard_link(self._client)

    def _start_local(self) -> None:
        self.tls_dir = str(dask_tls.create())
        self._own_credentials = True
        self.security = dask_tls.load(self.tls_dir)
        # The nannies start (and restart) worker processes from threads of their own: none of
        # them imports the user's script, for as long as the cluster lives.
        self._no_main.enter_context(no_main_for(NANNY_PROCESS))
        config = {"distributed.scheduler.allowed-failures": self._allowed_failures}
        try:
            with dask.config.set(config), sigint_ignored():  # a terminal's Ctrl-C is the driver's to handle
                self._cluster = distributed.LocalCluster(
                    n_workers=self._workers,
                    threads_per_worker=self._threads_per_worker,
                    processes=True,
                    host="127.0.0.1",
                    protocol="tls://",
                    security=self.security,
                    dashboard_address=self.dashboard_address or _default_dashboard(),
                    silence_logs=logging.ERROR,
                )
            try:
                self._client = distributed.Client(self._cluster, security=self.security, set_as_default=False)
            except BaseException:
                self._cluster.close()
                raise
        except BaseException:
            self._release_local()
            raise

    def _release_local(self) -> None:
        self._no_main.close()
        if self._own_credentials and self.tls_dir:
            dask_tls.remove(self.tls_dir)

    @property
    def join_hint(self) -> str | None:
        """How another run joins this cluster: ``[PIPELINES_DASK_TLS=FOLDER] --address ADDRESS``."""
        if self.scheduler_address is None:
            return None
        prefix = f"{dask_tls.ENV}={self.tls_dir} " if self.security is not None and self.tls_dir else ""
        return f"{prefix}--address {self.scheduler_address}"

    def run_on_every_worker(self, fn: Callable[[], Any], *, timeout: float = 120) -> dict[str, Any]:
        """Run ``fn`` once on every worker of the cluster (e.g. to check it reaches the store)."""
        assert self._client is not None
        results: dict[str, Any] = self._client.run(call, fn, wait=True, on_error="raise")
        return results

    def _submit(self, fn: Callable[[], T], key: str) -> Future[T]:
        assert self._client is not None
        outer: Future[T] = _futures.LinkedFuture()  # the client cannot tell queued from running
        task_key = f"{key}-{self._token}{next(self._counter)}"
        inner = self._client.submit(call, fn, key=task_key, pure=False)
        with self._pending_lock:  # holding the distributed future keeps the task wanted
            self._pending[outer] = inner
        inner.add_done_callback(lambda f: self._relay(f, outer))
        return outer

    def _relay(self, inner: distributed.Future[Any], outer: Future[Any]) -> None:
        with self._pending_lock:
            self._pending.pop(outer, None)
            self._finished.append(inner)
        if outer.done():  # cancelled by a shutdown
            return
        status = inner.status
        try:
            value = inner.result()
        except KilledWorker as exc:
            _futures.set_exception(
                outer, _lost(f"worker died: {exc.last_worker.address} (Dask gave up on {exc.task!r})", exc)
            )
        except CancelledError as exc:  # not by us: the scheduler connection went away
            _futures.set_exception(outer, _lost(f"task lost: {exc}", exc))
        except BaseException as exc:  # the future carries it
            if status == "error":  # raised by the task: own type, worker's traceback attached
                _futures.set_exception(outer, exc)
            else:  # the result could not be fetched: its worker is gone
                _futures.set_exception(outer, _lost(f"result lost with its worker: {exc!r}", exc))
        else:
            _futures.set_result(outer, value)

    def _shutdown(self, wait: bool, cancel_pending: bool) -> None:
        with self._pending_lock:
            pending = dict(self._pending)
        if cancel_pending and pending:
            for outer in pending:
                _futures.cancel(outer)
            with contextlib.suppress(OSError):  # a scheduler already gone has nothing to cancel
                assert self._client is not None
                self._client.cancel(list(pending.values()), force=True)
        elif wait and pending:
            wait_for(list(pending))
        if self.keep_cluster and self._cluster is not None:
            return  # ``wait_until_interrupted`` or ``close`` ends it
        self.close()

    def close(self) -> None:
        """Close the client and the local cluster this executor started (never one it joined)."""
        with self._close_lock:
            client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
            try:
                if client is not None:
                    client.close()
            finally:
                if cluster is not None:
                    cluster.close()
                    self._release_local()
                self._released.set()

    def wait_until_interrupted(self) -> None:
        """Block until Ctrl-C (or ``close()`` from another thread), then close the cluster.

        For ``keep_cluster=True``: the dashboard stays browsable after the run. Returns at once
        when no cluster was kept.
        """
        if self._cluster is None:
            return
        try:
            while not self._released.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.close()


def _connect(address: str, timeout: float, security: Any = None) -> distributed.Client:
    """A client of the scheduler at ``address``, or a ``ClusterUnreachableError`` naming it.

    A bare connection is tried first: a ``Client`` that fails to connect lingers and stalls
    interpreter exit for 10 s while it tries to close itself.
    """
    args = security.get_connection_args("client") if security is not None else {}

    async def probe() -> None:
        # The outer bound also covers the handshake, which distributed awaits without one.
        comm = await asyncio.wait_for(distributed.comm.core.connect(address, timeout=timeout, **args), timeout + 1)
        await comm.close()

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="pipelines-dask-probe") as thread:  # any caller's loop aside
            thread.submit(asyncio.run, probe()).result()
    except ValueError as exc:
        raise ClusterUnreachableError(f"not a Dask scheduler address: {address!r} ({exc})") from None
    except (OSError, TimeoutError) as exc:
        hint = (
            " (a scheduler that speaks TLS refuses tcp:// clients: use its tls:// address and credentials)"
            if address.startswith("tcp://") and "reset" in str(exc).lower()
            else ""
        )
        raise ClusterUnreachableError(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s: {str(exc) or 'no answer'}{hint}"
        ) from None
    except Exception as exc:  # something else answers there (an HTTP server, ...)
        raise ClusterUnreachableError(f"no Dask scheduler answers at {address}: {type(exc).__name__}: {exc}") from None
    return distributed.Client(address, timeout=timeout, security=security, set_as_default=False)


def _default_dashboard() -> str:
    """127.0.0.1:8787 if nothing listens there, else any free port."""
    host, port = DEFAULT_DASHBOARD.split(":")
    with socket.socket() as probe:
        try:
            probe.bind((host, int(port)))
        except OSError:
            return f"{host}:0"
    return DEFAULT_DASHBOARD


def _dashboard_link(client: distributed.Client) -> str | None:
    try:
        return client.dashboard_link or None
    except (KeyError, AttributeError, OSError):  # a scheduler without a dashboard (no bokeh)
        return None


def _lost(cause: str, exc: BaseException) -> WorkerLostError:
    lost = WorkerLostError(cause)
    lost.__cause__ = exc
    return lost
