"""Parallel work on Dask: the one way the kit runs tasks on several processes or machines.

Every parallel stage (galaxy rendering and truth, blends with their masks and compressed HDF5
chunks, a method's batches, scarlet2's fits) takes a *parallel* argument (:data:`Parallel`) and
runs its tasks through :func:`dask_client`:

- ``1`` (or ``None``): everything runs in the command's own process, without Dask;
- an int ``N > 1`` or ``"local:N"`` (N >= 1): a ``dask.distributed.LocalCluster`` of N worker
  processes, one thread each, started for the command and closed with it;
- ``"tcp://HOST:PORT"``: the workers of a running Dask scheduler (``dask scheduler`` and
  ``dask worker``, or a ``dask_jobqueue`` cluster's ``scheduler_address``); the command connects
  a client and leaves the cluster running;
- a ``distributed.Client``: used as it is (library callers, tests).

Results never depend on which: every task is a pure function of its inputs (each galaxy and each
blend has its own random stream), and the client consumes results in task order.

Worker processes of a LocalCluster never outlive their command: distributed keeps a pipe open to
each worker process, which exits at once when the pipe closes (the command is gone, SIGKILL
included), and each worker also watches its parent's process id
(:class:`challenge.pipeline.worker_guard.ExitWithParent`). After an error the cluster is closed
at once, queued tasks dropped. Remote workers (``tcp://``) belong to their cluster: a command
that stops cancels its tasks there, but a call already running in a worker thread runs on until
it returns.
"""

from __future__ import annotations

import logging
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Union

from challenge.contract.errors import BlendbenchError

if TYPE_CHECKING:
    from distributed import Client, Future

CONNECT_TIMEOUT_S = 10  # a remote scheduler must answer within this
WORKERS_TIMEOUT_S = 60  # ... and have at least one worker within this
# int (1 = in-process), "local:N", "tcp://HOST:PORT", or a distributed.Client.
Parallel = Union[int, str, "Client", None]
_SCHEDULER = re.compile(r"^(?:local:(?P<n>\d+)|(?P<address>(?:tcp|tls)://[^\s/]+:\d+))$")


class ClusterError(BlendbenchError, ValueError):
    """A --scheduler value is malformed, or its scheduler cannot be reached or has no workers."""


def parse_scheduler(text: str) -> int | str:
    """``"local:N"`` -> N worker processes here; ``"tcp://HOST:PORT"`` -> that address.

    Raises:
        ClusterError: anything else (the message names the option and the two forms).
    """
    match = _SCHEDULER.match(text.strip())
    if match is None or (match["n"] is not None and int(match["n"]) < 1):
        raise ClusterError(
            f"--scheduler {text!r}: expected local:N (N >= 1 worker processes on this machine, "
            "e.g. local:4) or tcp://HOST:PORT (a running Dask scheduler, e.g. "
            "tcp://10.0.0.5:8786)"
        )
    return int(match["n"]) if match["n"] is not None else match["address"]


def resolve_parallel(workers: int | None, scheduler: str | None, default: int = 1) -> Parallel:
    """The parallel argument of a command from its ``--workers`` and ``--scheduler`` options.

    ``--workers N`` is a LocalCluster of N processes (1: in-process), the same as
    ``--scheduler local:N``; giving both is refused.
    """
    if scheduler is not None and workers is not None:
        raise ClusterError(
            f"--workers {workers} and --scheduler {scheduler}: give one of them (--workers N is "
            "the same as --scheduler local:N)"
        )
    if scheduler is not None:
        parse_scheduler(scheduler)
        return scheduler.strip()
    n = default if workers is None else workers
    if n < 1:
        raise ClusterError(f"--workers {n}: expected a number of processes >= 1")
    return n


def describe(parallel: Parallel) -> str:
    """``"1 worker"``, ``"4 workers"`` or ``"tcp://...: 12 workers"``, for messages."""
    if parallel is None or isinstance(parallel, int):
        n = max(parallel or 1, 1)
        return f"{n} worker{'s' if n != 1 else ''}"
    if isinstance(parallel, str):
        target = parse_scheduler(parallel)
        return describe(target) if isinstance(target, int) else target
    n = n_threads(parallel)
    return f"{n} worker{'s' if n != 1 else ''}"


def worker_environ() -> dict[str, Any]:
    """Dask's environment for new worker processes, less ``MALLOC_TRIM_THRESHOLD_``.

    distributed sets it (65,536) to hand memory back to the system sooner; it also stops glibc
    from raising its mmap threshold, so every array above 128 KiB is mapped and unmapped anew:
    sep, blending and compression then run 5 to 10 times slower than in the command's own
    process (measured here: sep 1.48 s of CPU instead of 0.14 s for the same 200 images).
    """
    import dask
    import distributed  # noqa: F401  (defines the distributed.* configuration)

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environ


def _local_cluster(n: int):
    import dask
    from distributed import Client, LocalCluster

    # Dask's statistical profiler samples every worker thread every 10 ms (for the dashboard's
    # profile page): CPU taken from the tasks, measurable on a machine with few cores.
    settings = {
        "distributed.nanny.pre-spawn-environ": worker_environ(),
        "distributed.worker.profile.enabled": False,
    }
    with dask.config.set(settings):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address=":0",  # a free port: never clashes with another cluster
            silence_logs=logging.CRITICAL,
        )
    try:
        # Results come straight from the workers, not relayed by the scheduler, which would
        # pickle them in band (protocol 4, its common denominator) and copy every byte twice.
        client = Client(cluster, set_as_default=False, direct_to_workers=True)
        from challenge.pipeline.worker_guard import ExitWithParent

        client.register_plugin(ExitWithParent(os.getpid()), name=ExitWithParent.name)
    except BaseException:
        cluster.close(timeout=5)
        raise
    return cluster, client


def _remote_client(address: str):
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise ClusterError(
            f"--scheduler {address}: no Dask scheduler answered within {CONNECT_TIMEOUT_S} s "
            f"({type(err).__name__}); start one (`dask scheduler`, then `dask worker {address}` "
            "on each machine) or use --scheduler local:N"
        ) from None
    try:
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
    except (OSError, TimeoutError):
        client.close()
        raise ClusterError(
            f"--scheduler {address}: the scheduler has no workers after {WORKERS_TIMEOUT_S} s; "
            f"start some (`dask worker {address}`) or use --scheduler local:N"
        ) from None
    return client


def _quiet_logs() -> None:
    """distributed logs every worker it loses while a cluster closes: not the user's concern."""
    for name in ("distributed", "distributed.nanny", "distributed.scheduler",
                 "distributed.worker", "distributed.core", "distributed.client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


@contextmanager
def dask_client(parallel: Parallel) -> Iterator[Client | None]:
    """A Dask client for ``parallel`` (see :data:`Parallel`), or None to run in-process.

    A LocalCluster started here is closed when the block ends (at once after an error); a client
    connected to a remote scheduler is closed, the cluster left running.

    Raises:
        ClusterError: a malformed scheduler, or a remote one that does not answer or has no
            workers.
    """
    from_string = isinstance(parallel, str)
    if from_string:
        parallel = parse_scheduler(parallel)
    if parallel is None or (isinstance(parallel, int) and parallel <= 1 and not from_string):
        yield None
        return
    if not isinstance(parallel, (int, str)):
        yield parallel  # a client given by the caller: the caller closes it
        return
    _quiet_logs()
    if isinstance(parallel, str):
        client = _remote_client(parallel)
        try:
            yield client
        finally:
            client.close()
        return
    cluster, client = _local_cluster(parallel)
    try:
        yield client
    finally:
        _close_local(cluster, client)


def _close_local(cluster, client) -> None:
    """Close a LocalCluster now: its workers are killed, whatever they are running."""
    try:
        client.close(timeout=5)
    except Exception:  # noqa: BLE001 - closing after an error must not hide that error
        pass
    try:
        cluster.close(timeout=10)
    except Exception:  # noqa: BLE001
        pass


def n_threads(client: Client | None) -> int:
    """Worker threads of a cluster (tasks it runs at once); 1 without one (in-process)."""
    return 1 if client is None else max(sum(client.nthreads().values()), 1)


def task_slices(n: int, largest: int, threads: int, unit: int = 1) -> list[slice]:
    """The tasks that cut ``n`` items for ``threads`` worker threads, as slices in order:
    ``largest`` items while there is plenty left, then shrinking (each about a
    ``2 * threads``-th of what is left, a multiple of ``unit``, down to an eighth of
    ``largest``), so that the workers finish together instead of one of them running the last
    large task alone. One thread gets tasks of ``largest``.

    The cut only decides how the work is shared, never what it gives.
    """
    largest = max(-(-largest // unit) * unit, unit)
    smallest = max(largest // 8 // unit * unit, unit)
    slices: list[slice] = []
    start = 0
    while start < n:
        size = largest
        if threads > 1:
            share = -(-(n - start) // (2 * threads))
            size = min(largest, max(smallest, -(-share // unit) * unit))
        slices.append(slice(start, min(start + size, n)))
        start = slices[-1].stop
    return slices


def in_order(
    client: Client,
    func: Callable[..., Any],
    tasks: Iterable[tuple],
    window: int | None = None,
) -> Iterator[tuple[tuple, Future]]:
    """Submit ``func(*args)`` for each ``args`` of ``tasks`` and yield ``(args, future)`` in
    task order (``future.result()`` waits for it).

    At most ``window`` tasks (default: twice the cluster's threads, plus one) are submitted and
    not yet yielded, so ``tasks`` can be a lazy stream of any length and the client's memory stays
    bounded. The caller calls ``future.result()`` (which raises the task's exception). Tasks still
    queued when the caller stops iterating are cancelled.
    """
    window = window or 2 * n_threads(client) + 1
    pending: deque[tuple[tuple, Future]] = deque()
    stream = iter(tasks)
    try:
        while True:
            while len(pending) < window:
                args = next(stream, None)
                if args is None:
                    break
                pending.append((args, client.submit(func, *args, pure=False)))
            if not pending:
                return
            yield pending.popleft()
    finally:
        if pending:
            client.cancel([f for _, f in pending], force=True)


def first_line(err: BaseException) -> str:
    """``Type: first line of the message``, for one-line reports of a task that failed."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
