"""Worker processes that never outlive their command.

``ProcessPoolExecutor`` workers block on a pipe whose write end they inherited, so when the command
is killed (SIGKILL, or SIGTERM without cleanup) they stay alive forever, orphaned. Every pool of
the kit is made by :func:`worker_pool`: each worker watches its parent and exits once it is gone;
:func:`stop_pool` ends the workers of a pool at once (after an error, instead of waiting for the
batches still queued).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

POLL_S = 0.2  # how often a worker checks that its parent is alive


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != parent:
            os._exit(1)  # the parent is gone: nothing will read our results


def exit_with_parent() -> None:
    """Pool initializer: exit this worker as soon as its parent process is gone."""
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of ``workers`` processes that exit when the command does."""
    return ProcessPoolExecutor(max_workers=workers, initializer=exit_with_parent)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued tasks and terminate the workers now (after an error or a timeout)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=5)
