"""Worker processes that die with their parent, and a clear error for a script without a main guard.

The engine measures in spawned worker processes (`ProcessPoolExecutor`; the monitor's worker
is a program of its own, `grokutils.tools.monitor_worker`). Two ways such a worker goes wrong,
both handled here:

* its parent is killed (kill -9, the out-of-memory killer): the worker would wait forever on
  its task pipe (about 900 MB each, adopted by init), keeping the resource tracker alive too.
  `worker_init` starts a thread that ends the worker as soon as its parent is gone;
* a script calls `engine.run` at module level, without `if __name__ == "__main__":`: each
  spawned worker imports the main script and would run it again. `refuse_in_spawned_import`
  stops that at once with advice, instead of a worker waiting on its own parent's run lock.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.connection import wait

from grokutils import htsr

MAIN_GUARD_ADVICE = ("call engine.run (or grokutils.runs) under if __name__ == '__main__': "
                     "each measuring worker process imports the main script")


def worker_init() -> None:
    """Initializer of a measuring worker: exit when the parent dies, then `htsr.worker_init`."""
    exit_with_parent()
    htsr.worker_init()


def exit_with_parent() -> None:
    """In a child process: end it (exit status 1) as soon as its parent process is gone."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])  # readable once the parent's end of the pipe closes: it died
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def refuse_in_spawned_import(what: str) -> None:
    """Raise if this process is a spawned worker still importing the main script (no main guard)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # set by multiprocessing.spawn
        raise RuntimeError(f"{what} was called while a spawned worker process imported the main script, "
                           f"which has no main guard; {MAIN_GUARD_ADVICE}")
