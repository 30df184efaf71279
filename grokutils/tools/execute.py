"""Execute the book's notebooks with papermill under a parameter profile (`make notebooks`).

    python -m grokutils.tools.execute                            # every notebook, profile accelerated
    python -m grokutils.tools.execute --profile paper --only 01_mlp_grokking
    python -m grokutils.tools.execute --only 04_correlation_traps --output-dir /tmp/nb -p n_false_positive_draws 20

The notebooks are those `_toc.yml` lists, in book order (`grokutils.chapters`). A profile is
`profiles/NAME.yaml` (`grokutils.runs`): its `runs` section names each experiment's run once,
and every notebook that declares a `profile` parameter is given the profile's name to ask
`grokutils.runs` for its runs; its `notebooks` section holds notebooks' own parameters, only
for those it sets (a notebook it does not name runs with its parameters cell's defaults).
`-p NAME VALUE` overrides one parameter after it (VALUE is read as a Python literal if it is
one, else kept as a string, as papermill's `-p` does).

Everything is checked before the first kernel starts: the profile exists, names known notebooks,
and it and `-p` only set parameters the notebook declares (papermill itself only logs a warning
for an unknown name, and runs on); every profile a notebook will read (`--profile`, or `-p
profile X`) makes valid run configs. Paths given on the command line (`--profile FILE.yaml`, `-p
profile FILE.yaml`, `-p results_dir DIR`) are read against the caller's working directory, once,
here: the kernels run in `notebooks/`.

Kernels talk to papermill over Unix sockets in a folder of their own (IPC transport, no TCP
ports that two concurrent runs could both pick). Each cell has a finite time limit
(CELL_TIMEOUT_S; PROGRESS_CELL_TIMEOUT_S for the cells tagged `progress`, which train or
measure whole runs; a profile raises the latter per notebook with `cell_timeout_s` in its
`notebooks` entry, `--cell-timeout` sets both); a cell past its limit stops the run with an
error naming the notebook and the cell. A cell running longer than a minute is named in the log
(at 1, 2, 4, ... minutes); what the kernels write to stderr (the training progress bars) is passed
through to this process's stderr as it comes.

The kernels run with GROKUTILS_BATCH=1 in their environment: no frontend will show a widget,
so the prototype chapter's explorer draws a static figure instead of exchanging widget messages. Such
messages made a cell wait, silently, until its time limit, in 4 of 20 executions of
`benchmarks/widget_hang.py` beside two CPU-bound processes (issue 35; nbclient issue 312), and
in 0 of 20 with the static explorer. The kernel client guards every cell besides: it looks for
messages with zmq's own poll each second (`SlicedChannel`: the hang's reply had been in the
socket all along; 0 hangs in 40 executions with the live explorer, 9 in 68 before), and it
watches for a kernel that has gone idle after a cell without replying (`StallWatch`,
`--stall-timeout`): the notebook is then executed once more, and a second stall fails the run
with the notebook and the cell named.

Each notebook is executed into a temporary file beside
its output and moved over the original (or into `--output-dir`) only when it ran to the end,
so a failure never leaves a half-executed notebook behind.
"""
from __future__ import annotations

import argparse
import ast
import functools
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from queue import Empty

import nbformat
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import Type

from grokutils import runs
from grokutils.chapters import notebooks_in_toc
from grokutils.paths import REPO_ROOT
from grokutils.plots.common import BATCH_VARIABLE
from grokutils.runs import DEFAULT_PROFILE, available_profiles, read_profile

log = logging.getLogger(__name__)
# Cells with this tag show a progress bar while they run; its stderr is dropped afterwards,
# so that re-running from cached results (no bar) gives the same outputs (nbval).
PROGRESS_TAG = "progress"
CELL_TIMEOUT_S = 1800  # any other cell; the slowest here takes about 2 minutes
PROGRESS_CELL_TIMEOUT_S = 4 * 3600  # training cells: the accelerated runs take ~75 min from scratch on 2 cores
TIMEOUT_KEY = "cell_timeout_s"  # in a profile's notebooks entry: an execution setting, not a parameter
# Parameters whose value is a path when the caller gives one; resolved against the caller's folder.
PROFILE_PARAMETERS = ("profile", "mlp_profile")  # a profile name, or a .yaml file
DIRECTORY_PARAMETERS = ("results_dir",)  # "" means the default folder
# The kernel spec JupyterLab 4 writes for ipykernel's kernel; any other display name makes Lab
# rewrite it on opening, which marks the notebook modified.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
# Cells the book collapses whole (input and output): the config and provenance tables.
COLLAPSED_CALLS = ("setup(", "run_summary(")
# What an interactive widget's output says where no widget manager runs (an untrusted notebook, the book).
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_PLACEHOLDER = "Interactive explorer: run the notebook's cells in JupyterLab to get the slider."
# Set in the environment of the kernels this module starts: no frontend will show a widget, so
# the explorer draws its figure statically instead of exchanging widget messages, which can
# leave nbclient waiting for a reply it has already been sent (issue 35; `grokutils.prototypes`).
# How long a kernel may sit idle after a cell with its reply unread before the executor calls the
# cell stalled (`StallWatch`); the channels look for messages in slices of POLL_SLICE_S.
STALL_S = 120.0
POLL_SLICE_S = 1.0
HEARTBEAT_S = 60.0  # a cell running longer is named in the log at this interval


def load_profile(name: str, notebooks: list[Path] | None = None) -> dict[str, dict]:
    """What profile `name` sets per notebook: {notebook: {parameter: value}}, its `notebooks`
    section (less the execution setting `cell_timeout_s`) plus `profile: name` for each notebook
    that declares a `profile` parameter."""
    plan = {notebook: {key: value for key, value in (values or {}).items() if key != TIMEOUT_KEY}
            for notebook, values in read_profile(name)["notebooks"].items()}
    for path in notebooks if notebooks is not None else notebooks_in_toc():
        if "profile" in declared_parameters(path):
            plan.setdefault(path.stem, {})["profile"] = name
    return plan


def progress_timeouts(name: str) -> dict[str, float]:
    """The profile's `cell_timeout_s` per notebook: the limit of its `progress` cells, in seconds."""
    limits = {}
    for notebook, values in read_profile(name)["notebooks"].items():
        limit = (values or {}).get(TIMEOUT_KEY)
        if limit is None:
            continue
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0:
            raise ValueError(f"profile {name!r}: {notebook}.{TIMEOUT_KEY} must be a positive number of seconds, "
                             f"got {limit!r}")
        limits[notebook] = float(limit)
    return limits


def caller_paths(parameters: dict, cwd: Path) -> dict:
    """`parameters` with the paths in them made absolute against `cwd`, the caller's folder
    (the kernel runs in `notebooks/`, where a relative path would point elsewhere); a profile
    file that does not exist there is refused."""
    resolved = dict(parameters)
    for name in PROFILE_PARAMETERS:
        value = resolved.get(name)
        if isinstance(value, (str, Path)) and str(value).endswith((".yaml", ".yml")):
            path = (cwd / Path(value).expanduser()).resolve()
            if not path.is_file():
                raise ValueError(f"{name} {str(value)!r}: no such file {path} (a relative path is read "
                                 "against the folder you run from)")
            resolved[name] = str(path)
    for name in DIRECTORY_PARAMETERS:
        value = resolved.get(name)
        if isinstance(value, (str, Path)) and str(value):
            resolved[name] = str((cwd / Path(value).expanduser()).resolve())
    return resolved


def check_run_entries(profile: str) -> None:
    """Build every run config the profile names (raises ValueError on a bad value), so a bad
    profile stops here rather than at the end of a kernel's traceback."""
    entries = read_profile(profile)["runs"]
    if "mlp" in entries:
        runs.mlp_config(0.0, profile)
    if "modadd" in entries:
        runs.modadd_config(profile)


@functools.lru_cache(maxsize=None)
def declared_parameters(path: Path) -> frozenset[str]:
    """Names assigned in the notebook's `parameters` cell (read once per notebook and process:
    the profile and every `-p` are checked against it before any notebook runs)."""
    import papermill

    papermill_log = logging.getLogger("papermill")
    level = papermill_log.level
    papermill_log.setLevel(logging.WARNING)  # its "Input Notebook:" line would name every notebook of the book
    try:
        return frozenset(papermill.inspect_notebook(str(path)))
    finally:
        papermill_log.setLevel(level)


def check_plan(profile: dict[str, dict], notebooks: list[Path], source: str = "profile") -> None:
    """Fail before any work if the overrides (of a profile, or of `-p`) name unknown notebooks or
    parameters; `source` names them in the error."""
    by_name = {path.stem: path for path in notebooks}
    for name, overrides in profile.items():
        if name not in by_name:
            raise ValueError(f"{source} names notebook {name!r}, not in _toc.yml; known: {sorted(by_name)}")
        unknown = set(overrides or {}) - declared_parameters(by_name[name])
        if unknown:
            raise ValueError(f"{source} sets {sorted(unknown)} for {name}, which declares no such parameter; "
                             f"declared: {sorted(declared_parameters(by_name[name]))}")


def parse_value(text: str):
    """A `-p` value: a Python literal if it is one (5, 1e-3, True, [1, 2]), else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def tidy_executed(path: Path, name: str) -> None:
    """Drop the progress bars' stderr; record papermill's paths relative, not machine paths; one
    kernel spec (`tidy_metadata`); a widget's text fallback says how to get the widget."""
    notebook = nbformat.read(path, as_version=4)
    papermill_meta = notebook.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if key in papermill_meta:
            papermill_meta[key] = f"notebooks/{name}"
    for cell in notebook.cells:
        if cell.cell_type == "code" and PROGRESS_TAG in cell.metadata.get("tags", []):
            cell.outputs = [out for out in cell.outputs
                            if not (out.output_type == "stream" and out.name == "stderr")]
        for out in cell.get("outputs", []):
            if WIDGET_MIME in out.get("data", {}):
                out.data["text/plain"] = WIDGET_PLACEHOLDER
    tidy_metadata(notebook)
    nbformat.write(notebook, path)


def plumbing_tags(cell: nbformat.NotebookNode, first_code: bool) -> set[str]:
    """The MyST-NB tags that collapse a plumbing cell in the book (its prose stays): the imports
    (the first code cell), the parameters, the cells that load or train a run (`progress`) show
    only a toggle for their code; `setup()` and `run_summary(...)` (config and provenance
    tables) are collapsed whole."""
    if cell.cell_type != "code":
        return set()
    tags = set(cell.metadata.get("tags", []))
    if first_code or "parameters" in tags or PROGRESS_TAG in tags:
        return {"hide-input"}
    if cell.source.lstrip().startswith(COLLAPSED_CALLS):
        return {"hide-cell"}
    return set()


def tidy_metadata(notebook: nbformat.NotebookNode) -> bool:
    """Give `notebook` the kernel spec JupyterLab writes (KERNELSPEC), so that opening it in Lab
    changes nothing, and its plumbing cells their `plumbing_tags`; True if anything changed.
    `python -m grokutils.tools.execute --tidy-metadata` applies it to every notebook of the book
    (or those of `--only`) without executing any."""
    changed = notebook.metadata.get("kernelspec") != KERNELSPEC
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code:
        tags = cell.metadata.get("tags", [])
        missing = sorted(plumbing_tags(cell, cell is code[0]) - set(tags))
        if missing:
            cell.metadata["tags"] = [*tags, *missing]
            changed = True
    return changed


class KernelStalledError(RuntimeError):
    """The kernel finished a cell (its status went idle) but no reply to the request came."""


class StallWatch:
    """What a kernel client has seen of its execute requests: sent, the kernel idle after one,
    its reply read. `check` raises KernelStalledError for a request whose kernel has been idle
    for `stall_s` with no reply: a kernel that will never answer, since an idle kernel is done."""

    def __init__(self, stall_s: float = STALL_S) -> None:
        self.stall_s = stall_s
        self.idle_since: dict[str, float | None] = {}  # request id -> when its kernel went idle

    def sent(self, msg: dict) -> None:
        if msg["header"]["msg_type"] == "execute_request":
            self.idle_since[msg["header"]["msg_id"]] = None

    def seen(self, msg: dict) -> None:
        parent = msg.get("parent_header", {}).get("msg_id")
        if (msg["header"]["msg_type"] == "status" and msg["content"].get("execution_state") == "idle"
                and self.idle_since.get(parent, 0.0) is None):
            self.idle_since[parent] = time.monotonic()

    def replied(self, msg: dict) -> None:
        self.idle_since.pop(msg.get("parent_header", {}).get("msg_id"), None)

    def check(self) -> None:
        for idle in self.idle_since.values():
            if idle is not None and time.monotonic() - idle > self.stall_s:
                raise KernelStalledError(f"kernel idle, no reply for {time.monotonic() - idle:.0f} s")


class SlicedChannel(AsyncZMQSocketChannel):
    """A channel that looks for a message once per POLL_SLICE_S with zmq's own poll, then waits
    out the slice on the event loop; it tells its `StallWatch` what it reads and lets it check
    between slices. The kernel's reply to a widget cell could sit unseen in the socket while
    the event loop's wait missed its wake-up, until the cell's limit: the kernel had stamped
    reply and idle status at 2-4 s, nbclient read them at 60 s (nbclient issue 312). zmq's poll
    sees such a message within a slice: 0 hangs in 40 executions of `benchmarks/widget_hang.py`
    with the live explorer under load, against 9 in 68 with jupyter_client's own channels."""

    watch: StallWatch | None = None

    async def get_msg(self, timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SLICE_S if deadline is None else min(POLL_SLICE_S, max(0.0, deadline - time.monotonic()))
            # zmq's own poll first (timeout 0 bypasses the event loop): it sees a message whose
            # wake-up the event loop missed, which an asyncio wait would leave until it times out
            if await self.socket.poll(0) or await self.socket.poll(int(left * 1000)):
                msg = await self._recv()
                self.read(msg)
                return msg
            if self.watch is not None:
                self.watch.check()
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty

    def read(self, msg: dict) -> None:
        """Tell the watch about `msg`, just read."""


class WatchedShellChannel(SlicedChannel):
    """The shell channel: records the execute requests sent and the replies read."""

    def send(self, msg: dict) -> None:
        if self.watch is not None:
            self.watch.sent(msg)
        super().send(msg)

    def read(self, msg: dict) -> None:
        if self.watch is not None:
            self.watch.replied(msg)


class WatchedIOPubChannel(SlicedChannel):
    """The IOPub channel: records when the kernel goes idle after a request."""

    def read(self, msg: dict) -> None:
        if self.watch is not None:
            self.watch.seen(msg)


class WatchedKernelClient(AsyncKernelClient):
    """The kernel client of `tools.execute`: sliced waits, and a `StallWatch` shared by its
    shell and IOPub channels."""

    shell_channel_class = Type(WatchedShellChannel)
    iopub_channel_class = Type(WatchedIOPubChannel)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.watch = StallWatch()

    @property
    def shell_channel(self):
        channel = super().shell_channel
        channel.watch = self.watch
        return channel

    @property
    def iopub_channel(self):
        channel = super().iopub_channel
        channel.watch = self.watch
        return channel


class IPCKernelManager(AsyncKernelManager):
    """A kernel that talks over Unix sockets in a temporary folder of its own: no TCP ports, so
    kernels started at the same moment cannot pick the same one (a hang, issue 21)."""

    batch_environment = {BATCH_VARIABLE: "1"}  # added to the kernel's environment
    client_factory = Type(WatchedKernelClient, klass=AsyncKernelClient)
    stall_s = STALL_S  # given to the client's StallWatch

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.socket_folder = tempfile.mkdtemp(prefix="grokutils-kernel-")
        self.transport = "ipc"
        self.ip = os.path.join(self.socket_folder, "kernel")

    def client(self, **kwargs):
        client = super().client(**kwargs)
        if isinstance(client, WatchedKernelClient):
            client.watch.stall_s = self.stall_s
        return client

    async def _async_pre_start_kernel(self, **kwargs):
        kwargs["env"] = {**kwargs.get("env", os.environ), **self.batch_environment}
        return await super()._async_pre_start_kernel(**kwargs)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self.socket_folder, ignore_errors=True)


class CellClock:
    """nbclient's `timeout_func`: each cell's limit, remembering the cell it was last asked for
    (nbclient asks once per code cell, as it starts it) and when."""

    def __init__(self, cell_timeout_s: float, progress_timeout_s: float) -> None:
        self.limits = (cell_timeout_s, progress_timeout_s)
        self.cell = None
        self.number = 0  # code cells started, the injected parameters cell included
        self.started = time.monotonic()

    def __call__(self, cell) -> float:
        self.cell, self.number, self.started = cell, self.number + 1, time.monotonic()
        return self.limit(cell)

    def limit(self, cell) -> float:
        return self.limits[PROGRESS_TAG in cell.metadata.get("tags", [])]

    def where(self) -> str:
        """The current cell, for a message: its first line and its place among the code cells."""
        if self.cell is None:
            return "before the first cell"
        first_line = (self.cell.source.strip().splitlines() or [""])[0]
        return f"the cell starting {first_line!r} (code cell {self.number} as executed)"


def heartbeat(clock: CellClock, name: str, stop: threading.Event) -> None:
    """Log the cell `clock` is on once it has run HEARTBEAT_S, then at doubling intervals, until `stop`."""
    cell, next_report = None, HEARTBEAT_S
    while not stop.wait(1.0):
        if clock.cell is not cell:
            cell, next_report = clock.cell, HEARTBEAT_S
        elapsed = time.monotonic() - clock.started
        if cell is not None and elapsed >= next_report:
            log.info("    %s: still on %s after %.0f s", name, clock.where(), elapsed)
            next_report *= 2


def execute_notebook(path: Path, parameters: dict, output: Path | None = None,
                     cell_timeout_s: float = CELL_TIMEOUT_S, progress_timeout_s: float = PROGRESS_CELL_TIMEOUT_S,
                     stall_s: float = STALL_S, retries: int = 1) -> None:
    """Run one notebook in its own folder with papermill; write it (over `path` by default) only
    on success. A cell past its limit raises TimeoutError naming the notebook and the cell. A
    kernel idle for `stall_s` after a cell whose reply never came (`StallWatch`) is logged with
    the notebook and the cell, and the notebook executed again, up to `retries` times; then
    KernelStalledError says the same."""
    for attempt in range(retries + 1):
        try:
            return _execute_once(path, parameters, Path(output or path), cell_timeout_s, progress_timeout_s, stall_s)
        except KernelStalledError as err:
            if attempt == retries:
                raise
            log.warning("%s; executing %s again (retry %d of %d)", err, path.name, attempt + 1, retries)


def _execute_once(path: Path, parameters: dict, output: Path, cell_timeout_s: float, progress_timeout_s: float,
                  stall_s: float) -> None:
    """One papermill execution of `execute_notebook`."""
    import papermill
    from nbclient.exceptions import CellTimeoutError

    temporary = output.with_name(f".{path.stem}.running.ipynb")
    clock = CellClock(cell_timeout_s, progress_timeout_s)
    manager = type("IPCKernelManager", (IPCKernelManager,), {"stall_s": stall_s})
    stop = threading.Event()
    threading.Thread(target=heartbeat, args=(clock, path.name, stop), daemon=True).start()
    try:
        papermill.execute_notebook(str(path), str(temporary), parameters=parameters,
                                   cwd=str(path.parent), kernel_name="python3", progress_bar=False,
                                   kernel_manager_class=manager, timeout_func=clock,
                                   stderr_file=sys.stderr)  # training progress bars, live in the terminal
        tidy_executed(temporary, path.name)
        os.replace(temporary, output)
    except CellTimeoutError as err:
        raise TimeoutError(f"{path.name}: {clock.where()} ran past its limit of {clock.limit(clock.cell):g} s "
                           f"and was stopped (raise it with --cell-timeout, or {TIMEOUT_KEY} in the profile's "
                           f"entry for {path.stem})") from err
    except KernelStalledError as err:
        raise KernelStalledError(
            f"{path.name}: {clock.where()}: {err}. The kernel finished the cell, but its reply never reached "
            "the executor: a known race between nbclient and widget messages (nbclient issue 312); "
            f"--stall-timeout sets how long to wait (now {stall_s:g} s)") from err
    finally:
        stop.set()
        temporary.unlink(missing_ok=True)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help=f"one of {available_profiles()}")
    parser.add_argument("--only", nargs="*", default=None, help="notebook names (default: all in _toc.yml)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override one parameter of every selected notebook, after the profile")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="write the executed notebooks here (default: over the originals)")
    parser.add_argument("--tidy-metadata", action="store_true",
                        help="only give every notebook of the book the one kernel spec (no execution)")
    parser.add_argument("--cell-timeout", type=float, default=None, metavar="SECONDS",
                        help=f"limit of every cell (default: {CELL_TIMEOUT_S} s, {PROGRESS_CELL_TIMEOUT_S} s "
                             f"for cells tagged {PROGRESS_TAG!r} or the profile's {TIMEOUT_KEY})")
    parser.add_argument("--stall-timeout", type=float, default=STALL_S, metavar="SECONDS",
                        help=f"a kernel idle this long after a cell whose reply never came is a stall: the notebook "
                             f"is executed once more, then the run fails (default: {STALL_S:g} s)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.stall_timeout) and args.stall_timeout > 0):
        parser.error(f"--stall-timeout must be a positive number of seconds, got {args.stall_timeout:g}")
    if args.cell_timeout is not None and not (math.isfinite(args.cell_timeout) and args.cell_timeout > 0):
        parser.error(f"--cell-timeout must be a positive number of seconds, got {args.cell_timeout:g}")
    if args.output_dir is not None and args.output_dir.exists() and not args.output_dir.is_dir():
        parser.error(f"--output-dir {str(args.output_dir)!r} is a file, not a folder")
    return args


def select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    """The notebooks named by `--only` (all if None), in book order; unknown names are refused."""
    if only is None:
        return notebooks
    unknown = set(only) - {path.stem for path in notebooks}
    if unknown:
        raise ValueError(f"--only names {sorted(unknown)}, not in _toc.yml")
    return [path for path in notebooks if path.stem in only]


class PlanError(ValueError):
    """A bad profile, parameter or notebook name, found before any notebook runs."""


def _plans(args: argparse.Namespace) -> tuple[str, dict[Path, dict], dict[str, float]]:
    """(profile name, {notebook: its parameters}, progress-cell limits), every value checked
    (ValueError names the bad one)."""
    cwd = Path.cwd()
    name = caller_paths({"profile": args.profile}, cwd)["profile"]
    notebooks = notebooks_in_toc()
    profile = load_profile(name, notebooks)
    check_plan(profile, notebooks)
    limits = progress_timeouts(name)
    notebooks = select(notebooks, args.only)
    overrides = {key: parse_value(value) for key, value in args.parameter}
    check_plan({path.stem: overrides for path in notebooks}, notebooks, source="-p")
    plans = {path: caller_paths({**(profile.get(path.stem) or {}), **overrides}, cwd) for path in notebooks}
    for parameters in plans.values():
        for key in PROFILE_PARAMETERS:
            if key in parameters:
                check_run_entries(parameters[key])
    return name, plans, limits


def main(argv: list[str] | None = None) -> int:
    """Command line: execute the notebooks of a profile, with `-p` overrides on top."""
    args = _arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("papermill").setLevel(logging.WARNING)  # paths per notebook: our lines say it
    if args.tidy_metadata:
        for path in select(notebooks_in_toc(), args.only):
            notebook = nbformat.read(path, as_version=4)
            if tidy_metadata(notebook):
                nbformat.write(notebook, path)
                log.info("kernel spec and plumbing tags set in %s", path.relative_to(REPO_ROOT))
        return 0
    try:
        name, plans, limits = _plans(args)
    except ValueError as err:
        raise PlanError(str(err)) from err
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    for number, (path, parameters) in enumerate(plans.items(), start=1):
        log.info("[%d/%d] executing %s (profile %s)", number, len(plans), path.relative_to(REPO_ROOT),
                 parameters.get("profile", f"none: {path.stem} takes its own parameters"))
        output = None if args.output_dir is None else args.output_dir / path.name
        cell_limit = args.cell_timeout or CELL_TIMEOUT_S
        progress_limit = args.cell_timeout or limits.get(path.stem, PROGRESS_CELL_TIMEOUT_S)
        started = time.monotonic()
        try:
            execute_notebook(path, parameters, output, cell_limit, progress_limit, args.stall_timeout)
        except (TimeoutError, KernelStalledError):
            if number > 1:
                log.error("[%d/%d] %s failed; the %d notebook(s) before it are kept%s", number, len(plans), path.name,
                          number - 1, "" if output is None else f" in {args.output_dir}")
            raise
        log.info("[%d/%d] finished %s in %.0f s", number, len(plans), path.name, time.monotonic() - started)
    return 0


def cli(argv: list[str] | None = None) -> int:
    """`main` as a command: a bad plan is one line on stderr and exit status 2, a cell past its
    limit or a stalled kernel one line and exit status 1, not a traceback."""
    try:
        return main(argv)
    except PlanError as err:
        print(f"python -m grokutils.tools.execute: error: {err}", file=sys.stderr)
        return 2
    except (TimeoutError, KernelStalledError) as err:
        print(f"python -m grokutils.tools.execute: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(cli())
