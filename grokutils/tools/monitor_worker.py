"""The monitor's analysis worker as a program of its own, and the executor that drives it.

    executor = ProgramExecutor()                  # starts: python -m grokutils.tools.monitor_worker
    future = executor.submit(analyze_snapshot, step, matrices, seed, analyzer, kwargs)
    executor.shutdown()

A `multiprocessing` worker (spawn or forkserver) imports the parent's main script before it
runs anything, so a training script without `if __name__ == "__main__":` would train again
inside the monitor's worker. This worker is a fresh Python program instead: it imports
grokutils and the modules of the functions it is sent (the parent's `sys.path` is passed on),
never the script. Tasks and results travel as length-prefixed pickles over two pipes of their
own (stdout stays free for anything the analysis prints). The worker exits when its task pipe
closes: when the executor shuts down, or when the training process dies, even by kill -9.
Futures that were pending when the worker died get `BrokenProcessPool`, as
`ProcessPoolExecutor`'s do, so `grokutils.tools.monitor` replaces it the same way. A function
defined in the training script itself cannot be sent (it is not importable): pass an
analyzer from a module, or use `worker="thread"`.
"""
from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import threading
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from typing import BinaryIO

HEADER = 8  # bytes of the little-endian length before each pickle


def write_frame(stream: BinaryIO, payload: bytes) -> None:
    """One length-prefixed frame."""
    stream.write(len(payload).to_bytes(HEADER, "little") + payload)
    stream.flush()


def read_frame(stream: BinaryIO) -> bytes | None:
    """The next frame, or None at the end of the stream (the other side closed or died)."""
    header = stream.read(HEADER)
    if len(header) < HEADER:
        return None
    size = int.from_bytes(header, "little")
    payload = stream.read(size)
    return payload if len(payload) == size else None


def serve(tasks: BinaryIO, results: BinaryIO) -> None:
    """The worker's loop: run each task `(id, function, args, kwargs)`, send `(id, ok, value)`."""
    from grokutils import htsr

    htsr.worker_init()
    while (frame := read_frame(tasks)) is not None:
        task_id, function, args, kwargs = pickle.loads(frame)
        try:
            reply = (task_id, True, function(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - the parent decides what a failure means
            reply = (task_id, False, err)
        try:
            payload = pickle.dumps(reply)
        except Exception as err:  # noqa: BLE001 - an unpicklable result or exception
            payload = pickle.dumps((task_id, False, RuntimeError(f"{type(err).__name__}: {err}")))
        write_frame(results, payload)


class ProgramExecutor(Executor):
    """A one-worker executor whose worker is `python -m grokutils.tools.monitor_worker`."""

    def __init__(self) -> None:
        task_read, task_write = os.pipe()
        result_read, result_write = os.pipe()
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "grokutils.tools.monitor_worker", str(task_read), str(result_write)],
            pass_fds=(task_read, result_write), env=environment, stdin=subprocess.DEVNULL)
        os.close(task_read)
        os.close(result_write)
        self._tasks, self._results = os.fdopen(task_write, "wb"), os.fdopen(result_read, "rb")
        self._futures: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._next_id, self._broken = 0, ""
        self._outbox: queue.Queue[bytes | None] = queue.Queue()  # written by a thread: submit never blocks
        self._writer = threading.Thread(target=self._write_tasks, name="monitor-worker-writer", daemon=True)
        self._reader = threading.Thread(target=self._read_results, name="monitor-worker-reader", daemon=True)
        self._writer.start()
        self._reader.start()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        """Send `fn(*args, **kwargs)` to the worker; a future of its result."""
        future: Future = Future()
        with self._lock:
            if self._broken:
                raise BrokenProcessPool(self._broken)
            task_id, self._next_id = self._next_id, self._next_id + 1
            try:
                payload = pickle.dumps((task_id, fn, args, kwargs))
            except Exception as err:  # noqa: BLE001 - e.g. a function defined in the training script
                future.set_exception(err)
                return future
            self._futures[task_id] = future
        future.set_running_or_notify_cancel()
        self._outbox.put(payload)
        return future

    def _write_tasks(self) -> None:
        while (payload := self._outbox.get()) is not None:
            try:
                write_frame(self._tasks, payload)
            except OSError:  # the worker is gone; the reader reports it
                return
        self._tasks.close()

    def _read_results(self) -> None:
        while (frame := read_frame(self._results)) is not None:
            task_id, ok, value = pickle.loads(frame)
            with self._lock:
                future = self._futures.pop(task_id, None)
            if future is not None and not future.done():
                future.set_result(value) if ok else future.set_exception(value)
        status = self._process.wait()
        self._break(f"the monitor's worker process exited (status {status})")

    def _break(self, reason: str) -> None:
        """Fail every pending future with BrokenProcessPool; refuse new tasks."""
        with self._lock:
            self._broken = self._broken or reason
            pending, self._futures = list(self._futures.values()), {}
        for future in pending:
            if not future.done():
                future.set_exception(BrokenProcessPool(reason))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Close the task pipe (the worker exits after its tasks); with cancel_futures, stop it now."""
        if cancel_futures and self._process.poll() is None:
            self._process.kill()
        self._outbox.put(None)
        if wait:
            self._writer.join()
            self._process.wait()
            self._reader.join()


def main(argv: list[str]) -> int:
    """`python -m grokutils.tools.monitor_worker TASK_FD RESULT_FD` (started by ProgramExecutor)."""
    tasks, results = (os.fdopen(int(fd), mode) for fd, mode in zip(argv, ("rb", "wb")))
    serve(tasks, results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
