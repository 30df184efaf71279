"""How often a notebook with chapter 05's explorer widget hangs in batch execution (issue 35).

    python benchmarks/widget_hang.py [--executions 20] [--executor plain|ours] [--busy 1] [--cell-limit 60]

Executes a small notebook, the explorer of chapter 05 (`grokutils.prototypes.explorer`: a
slider, and an `Output` widget redrawn with `clear_output(wait=True)` and `display(fig)`) on
the smoke profile's committed run, in three cells, `--executions` times, while `--busy`
processes each keep a core busy. Each execution gets a short cell limit; a cell that reaches
it, or whose recorded duration comes within 10% of it, counts as a hang (nbclient records a
reply it only read when its wait ran out as "completed", at the limit).

- `--executor plain`: papermill on a kernel that behaves as under JupyterLab (the explorer
  builds its widget) with jupyter_client's own channels: the executor before the fix.
- `--executor ours`: `grokutils.tools.execute.execute_notebook`, as `make book` runs it (the
  explorer draws statically, the client waits in one-second slices and watches for stalls).
- `--executor live`: the same, but with the explorer's live widget: the client's part alone.

Prints one line per execution and the count of hangs. Compare counts only within one sitting.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import nbformat
from jupyter_client.asynchronous import AsyncKernelClient
from traitlets import Type

from grokutils.tools import execute

CELLS = [
    "from grokutils import prototypes, runs\nresult = runs.mlp(weight_decay=0.0, profile='smoke')",
    *["prototypes.explorer(result, seed=0)"] * 3,
]


def write_notebook(folder: Path) -> Path:
    """The stress notebook, in `folder`."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS])
    notebook.metadata["kernelspec"] = dict(execute.KERNELSPEC)
    path = folder / "widget_stress.ipynb"
    nbformat.write(notebook, path)
    return path


def plain_execution(path: Path, output: Path, limit: float) -> None:
    """papermill with the explorer's live widget and unwatched channels (the executor before the fix)."""
    import papermill

    os.environ.pop(execute.BATCH_VARIABLE, None)
    papermill.execute_notebook(str(path), str(output), cwd=str(path.parent), kernel_name="python3",
                               progress_bar=False, kernel_manager_class=PlainIPCKernelManager,
                               timeout_func=lambda cell: limit)


class PlainIPCKernelManager(execute.IPCKernelManager):
    """The IPC kernel of `tools.execute` with jupyter_client's own client (no watched channels)."""

    batch_environment: dict = {}
    client_factory = Type(AsyncKernelClient, klass=AsyncKernelClient)


def longest_cell(output: Path) -> tuple[float, str]:
    """The longest recorded cell duration in an executed notebook, in seconds, and where its time
    went: the kernel's own timestamps (busy, idle, reply sent) against papermill's end of the cell."""
    notebook = nbformat.read(output, as_version=4)
    cell = max(notebook.cells, key=lambda cell: cell.metadata.get("papermill", {}).get("duration") or 0.0)
    papermill, stamps = cell.metadata.get("papermill", {}), cell.metadata.get("execution", {})
    start = datetime.fromisoformat(papermill["start_time"])

    def after(stamp: str | None) -> str:
        return "?" if stamp is None else f"{(datetime.fromisoformat(stamp) - start).total_seconds():.1f}"

    timing = (f"kernel busy at {after(stamps.get('iopub.status.busy'))} s, idle at "
              f"{after(stamps.get('iopub.status.idle'))} s, reply sent at {after(stamps.get('shell.execute_reply'))} "
              f"s, cell ended at {after(papermill.get('end_time'))} s")
    return papermill.get("duration") or 0.0, f"{cell.source.splitlines()[0]!r}: {timing}"


class Stalls(logging.Handler):
    """Counts the stalls `tools.execute` caught and retried (its warnings)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "again (retry" in record.getMessage()


STALLS = Stalls()
execute.log.addHandler(STALLS)


def one_execution(path: Path, executor: str, limit: float, stall_s: float = execute.STALL_S) -> tuple[bool, float, str]:
    """(hung, seconds, what happened) for one execution; a stall caught and retried is a hang."""
    output = path.with_name("executed.ipynb")
    started = time.monotonic()
    stalls = STALLS.count
    try:
        if executor == "plain":
            plain_execution(path, output, limit)
        elif executor == "live":
            execute.IPCKernelManager.batch_environment = {}
            execute.execute_notebook(path, {}, output, limit, limit, stall_s)
        else:
            execute.execute_notebook(path, {}, output, limit, limit, stall_s)
    except Exception as err:  # a timeout or a stall: report it and go on counting
        return True, time.monotonic() - started, f"{type(err).__name__}: {str(err).splitlines()[0][:150]}"
    (longest, timing), retried = longest_cell(output), STALLS.count - stalls
    return (longest >= 0.9 * limit or retried > 0, time.monotonic() - started,
            f"longest cell {longest:.1f} s, {timing}" + (f"; {retried} stall(s) caught and retried" if retried else ""))


def main(argv: list[str] | None = None) -> int:
    """Command line: run the executions, print each and the count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=20)
    parser.add_argument("--executor", choices=("plain", "ours", "live"), default="ours")
    parser.add_argument("--busy", type=int, default=1, help="processes that keep a core busy meanwhile")
    parser.add_argument("--cell-limit", type=float, default=60.0, help="seconds; a cell reaching it is a hang")
    parser.add_argument("--stall-timeout", type=float, default=execute.STALL_S,
                        help="seconds a kernel may sit idle with its reply unread (executors ours and live)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the executor's stall warnings
    logging.getLogger("papermill").setLevel(logging.WARNING)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    hangs = 0
    try:
        with tempfile.TemporaryDirectory(prefix="widget-hang-") as folder:
            path = write_notebook(Path(folder))
            for number in range(1, args.executions + 1):
                hung, seconds, what = one_execution(path, args.executor, args.cell_limit, args.stall_timeout)
                hangs += hung
                print(f"[{number}/{args.executions}] {'HANG' if hung else 'ok'} in {seconds:.1f} s: {what}",
                      flush=True)
    finally:
        for process in busy:
            process.kill()
    print(f"executor {args.executor}: {hangs} hang(s) in {args.executions} executions "
          f"(cell limit {args.cell_limit:g} s, {args.busy} busy process(es) beside)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
