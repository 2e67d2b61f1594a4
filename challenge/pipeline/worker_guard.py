"""A Dask worker plugin that ends a worker process as soon as its parent process is gone.

Imported only on the workers of the LocalClusters the kit starts (and by the client that
registers it), so that importing the kit never imports ``distributed``.
"""

from __future__ import annotations

import os
import threading
import time

from distributed import WorkerPlugin

POLL_S = 0.2  # how often a worker checks that its parent is alive


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != parent:
            os._exit(1)  # the command is gone: nothing will read our results


class ExitWithParent(WorkerPlugin):
    """Exit the worker process once process ``parent`` (the command that started it) is gone.

    A LocalCluster's worker processes are children of the command's process; a remote cluster's
    workers never get this plugin.
    """

    name = "blendbench-exit-with-parent"

    def __init__(self, parent: int):
        self.parent = parent

    def setup(self, worker) -> None:
        if os.getppid() != self.parent:
            os._exit(1)
        threading.Thread(target=_watch_parent, args=(self.parent,), daemon=True).start()
