"""The results store: a config hashes to a folder of Parquet tables, npz arrays and JSON.

A finished run folder (the layout `RUN`) holds

    config.json            the frozen config, as given
    meta.json              versions, data fingerprint, device, timings, per-seed status,
                           and the size and SHA-256 of every file below (written last: the seal)
    curves.parquet         one row per (seed, step): accuracy, loss, progress measures
    layers.parquet         one row per (seed, step, layer): HTSR fit, traps, norms
    arrays.npz             per (seed, step, layer): eigenvalues of X(W) and X(W_rand), v1 (float32)
    weights.safetensors    all weights at a few key checkpoints (init, best test, final), float32

Other results are kept the same way, each kind described by a `Layout` (its files, the keys
its seal must hold, its folder's name): the learning-rate sweep's points (`grokutils.sweep.POINT`)
hold config.json and curves.parquet, sealed by meta.json. Work in progress lives in
`NAME.partial/` beside the folder; the finished folder appears by one atomic rename, so a
half-written run is never taken for a finished one. A folder whose files no longer match their
seal (a flipped byte, a truncated copy, a garbled meta.json) is not finished either: it is
renamed `NAME.damaged` (its files may be intact and worth hours) and recomputed, with a WARNING
naming the folder, the file and where it went. One process at a time computes a config
(`run_lock`), also across machines that share the results folder (NFS, Lustre): a lock file
with an owner and a heartbeat.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

log = logging.getLogger(__name__)
FILES = ("config.json", "curves.parquet", "layers.parquet", "arrays.npz", "weights.safetensors")
META_KEYS = ("config_hash", "status", "key_steps", "data_source", "data_fingerprint", "device", "timings",
             "versions")  # what a seal must hold besides the file lists (the engine writes them all)


def config_hash(config) -> str:
    """12 hex digits of the SHA-256 of the config's class name and fields (a late field at its
    default left out: `grokutils.config.LATE_FIELDS`)."""
    from grokutils.config import LATE_FIELDS

    fields = {name: value for name, value in dataclasses.asdict(config).items()
              if not (name in LATE_FIELDS and value == LATE_FIELDS[name])}
    payload = json.dumps({"kind": type(config).__name__, **fields}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def run_name(config) -> str:
    """The folder name of a config's run: `SLUG-HASH`."""
    return f"{config.slug()}-{config_hash(config)}"


@dataclass(frozen=True)
class Layout:
    """One kind of sealed results folder: the files it holds besides meta.json (config.json
    among them), the keys its seal must hold besides the file lists, and its folder's name
    for a config (ending in the config's hash)."""

    files: tuple[str, ...]
    meta_keys: tuple[str, ...]
    name: Callable[[object], str]


RUN = Layout(FILES, META_KEYS, run_name)  # a run of the engine


def run_dir(config, results_dir: Path) -> Path:
    """The folder of a config's finished results: `results_dir/SLUG-HASH`."""
    return Path(results_dir) / run_name(config)


def partial_dir(final: Path) -> Path:
    """Where a run's unfinished work lives."""
    return final.with_name(final.name + ".partial")


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temporary file beside `path`, then rename over it.

    On any failure the temporary file is removed; an OSError (a full disk) is raised again
    naming `path`, with its errno kept.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_bytes(payload)
        os.replace(temporary, path)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise OSError(err.errno, f"could not write {path}: {err.strerror or err}") from err
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def parquet_bytes(table: pd.DataFrame) -> bytes:
    """A table as the bytes of a Parquet file, without its index."""
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return buffer.getvalue()


def config_bytes(config) -> bytes:
    """A config as the bytes of its config.json."""
    return (json.dumps(dataclasses.asdict(config), indent=1) + "\n").encode()


def atomic_write_table(table: pd.DataFrame, path: Path, parquet: bool | None = None) -> None:
    """A table as Parquet or CSV (None: Parquet for a `.parquet` path), through `atomic_write_bytes`."""
    path = Path(path)
    if parquet or (parquet is None and path.suffix == ".parquet"):
        atomic_write_bytes(path, parquet_bytes(table))
    else:
        atomic_write_bytes(path, table.to_csv(index=False).encode())


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal_problem(folder: Path, layout: Layout = RUN) -> str | None:
    """Why `folder` is not a finished folder of `layout` (None if it is): no seal, a damaged
    seal (one that does not list the size and SHA-256 of every file of the layout, or lacks one
    of its `meta_keys`), or a file whose size or SHA-256 differs from it."""
    meta_path = Path(folder) / "meta.json"
    if not meta_path.is_file():
        return "no meta.json (not sealed)"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return "meta.json is unreadable"
    problem = _seal_shape_problem(meta, layout)
    if problem is not None:
        return f"damaged seal: {problem}"
    for name in layout.files:
        path = Path(folder) / name
        if not path.is_file():
            return f"{name}: missing"
        if path.stat().st_size != meta["file_sizes"][name]:
            return f"{name}: size {path.stat().st_size}, sealed {meta['file_sizes'][name]}"
        if file_sha256(path) != meta["file_sha256"][name]:
            return f"{name}: SHA-256 differs from the seal"
    return None


def _seal_shape_problem(meta, layout: Layout) -> str | None:
    """What is wrong with a seal itself (None if nothing): every file of the layout must have a
    size (an integer) and a SHA-256 (a string), and every one of its `meta_keys` a value."""
    if not isinstance(meta, dict) or not isinstance(meta.get("file_sizes"), dict):
        return "meta.json has no file_sizes mapping"
    if not isinstance(meta.get("file_sha256"), dict):
        return "meta.json has no file_sha256 mapping"
    unlisted = [name for name in layout.files if not isinstance(meta["file_sizes"].get(name), int)]
    if unlisted:
        return f"file_sizes lacks {unlisted}"
    missing = [key for key in layout.meta_keys if key not in meta]
    if missing:
        return f"meta.json lacks {missing}"
    unhashed = [name for name in layout.files if not isinstance(meta["file_sha256"].get(name), str)]
    if unhashed:
        return f"file_sha256 lacks {unhashed}"
    return None


def is_complete(folder: Path, layout: Layout = RUN) -> bool:
    """True if meta.json seals the folder and every file has its recorded size and hash."""
    return seal_problem(folder, layout) is None


def seal(folder: Path, meta: dict, layout: Layout = RUN) -> None:
    """Write meta.json, with the size and SHA-256 of every file of the layout: the last write."""
    sizes = {name: (folder / name).stat().st_size for name in layout.files}
    hashes = {name: file_sha256(folder / name) for name in layout.files}
    text = json.dumps({**meta, "file_sizes": sizes, "file_sha256": hashes}, indent=1) + "\n"
    atomic_write_bytes(folder / "meta.json", text.encode())


def write_sealed(final: Path, files: dict[str, bytes], meta: dict, layout: Layout = RUN) -> None:
    """Write `files` (name -> bytes, every file of the layout) into a staging folder, each by
    `atomic_write_bytes` (a full disk names the file, and every file gets the same mode), seal
    it, and rename it into place.

    A failure (a full disk) removes the staging folder and leaves any earlier `final` as it was.
    """
    staging = final.with_name(final.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name, payload in files.items():
            atomic_write_bytes(staging / name, payload)
        seal(staging, meta, layout)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)


def write_run(final: Path, config, curves: pd.DataFrame, layers: pd.DataFrame,
              arrays: dict[str, np.ndarray], weights: dict[str, torch.Tensor], meta: dict) -> None:
    """Write and seal every file of a finished run (`write_sealed`)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    files = {"config.json": config_bytes(config), "curves.parquet": parquet_bytes(curves),
             "layers.parquet": parquet_bytes(layers), "arrays.npz": buffer.getvalue(),
             "weights.safetensors": safetensors_bytes({key: value.contiguous() for key, value in weights.items()})}
    write_sealed(final, files, meta)


@dataclass
class RunResult:
    """A finished run, loaded: tables in memory, arrays and weights read on demand."""

    path: Path
    config: object
    meta: dict
    curves: pd.DataFrame  # one row per (seed, step)
    layers: pd.DataFrame  # one row per (seed, step, layer); empty for a layout without layers.parquet

    def array(self, seed: int, step: int, layer: str, what: str) -> np.ndarray:
        """`what` in {evals, rand_evals, v1} of one layer at one checkpoint."""
        with np.load(self.path / "arrays.npz") as arrays:
            return arrays[array_key(seed, step, layer, what)]

    def weights(self, seed: int, which: str) -> dict[str, torch.Tensor]:
        """The state dict at a key checkpoint: `which` in {init, best, final}."""
        prefix = f"seed{seed}/{which}/"
        tensors = load_file(self.path / "weights.safetensors")
        if not any(key.startswith(prefix) for key in tensors):
            kept = sorted({key.rsplit("/", 1)[0] for key in tensors})
            raise KeyError(f"no weights for seed {seed} at {which!r}; kept: {kept}")
        return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}

    @property
    def key_steps(self) -> dict:
        """The steps whose weights were kept, per seed: {seed: {which: step}}."""
        return {int(seed): steps for seed, steps in self.meta["key_steps"].items()}


def run_summary(result: RunResult) -> pd.Series:
    """What a reader needs to trust a run: config, data, device, versions, timings and speed."""
    meta = result.meta
    trained = sum(status["step"] for status in meta["status"].values())
    fingerprints = {f"{name} sha256": digest[:16] for name, digest in meta["data_fingerprint"].items()}
    finished = ", ".join(f"{seed}: {status['status']}" for seed, status in meta["status"].items())
    return pd.Series({
        "results folder": result.path.name,
        "seeds": f"{result.config.n_seeds} ({finished})",
        "steps per seed": f"{result.config.steps:,}",
        "checkpoints measured": int(result.curves.groupby("seed").size().iloc[0]),
        "data": meta["data_source"],
        **fingerprints,
        "device": meta["device"],
        "training time (s)": meta["timings"]["train_s"],
        "training steps per second (all seeds)": round(trained / max(meta["timings"]["train_s"], 0.1), 1),
        "measuring time, summed over workers (s)": meta["timings"]["measure_s"],
        "wall time (s)": meta["timings"]["wall_s"],
        "versions": ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
    }, name="value")


def array_key(seed: int, step: int, layer: str, what: str) -> str:
    """The npz key of one array."""
    return f"seed{seed}/step{step}/{layer}/{what}"


def run_problem(folder: Path, config_class, layout: Layout = RUN) -> str | None:
    """Why `folder` is not a finished folder of `config_class` (None if it is): `seal_problem`,
    or a config.json that is not a valid config or whose layout name is not the folder's (a
    renamed folder or an edited config would otherwise serve one config's results for another's)."""
    problem = seal_problem(folder, layout)
    if problem is not None:
        return problem
    folder = Path(folder)
    try:
        config = config_class(**json.loads((folder / "config.json").read_text()))
    except (TypeError, ValueError) as err:
        return f"config.json is not a valid {config_class.__name__} ({err})"
    expected = layout.name(config)
    if folder.name != expected:
        return f"config.json hashes to {expected}, not to this folder's name"
    return None


def load_run(folder: Path, config_class, layout: Layout = RUN) -> RunResult:
    """Load a finished run; refuse a folder that is not sealed, not complete or not its config's."""
    folder = Path(folder)
    problem = run_problem(folder, config_class, layout)
    if problem is not None:
        raise FileNotFoundError(f"{folder.name}: not a finished run ({problem})")
    return _read_run(folder, config_class, layout)


def load_if_finished(folder: Path, config_class, layout: Layout = RUN) -> RunResult | None:
    """The finished run in `folder`, or None if there is none (its files are hashed once)."""
    folder = Path(folder)
    return _read_run(folder, config_class, layout) if run_problem(folder, config_class, layout) is None else None


def _read_run(folder: Path, config_class, layout: Layout) -> RunResult:
    """Read a folder whose seal has just been checked."""
    config = config_class(**json.loads((folder / "config.json").read_text()))
    meta = json.loads((folder / "meta.json").read_text())
    layers = pd.read_parquet(folder / "layers.parquet") if "layers.parquet" in layout.files else pd.DataFrame()
    return RunResult(folder, config, meta, pd.read_parquet(folder / "curves.parquet"), layers)


# --- one process per run, on one machine or many; compute what is not stored ----------------
#
# The lock is a file, `NAME.lock`, made by a hard link (atomic on NFS, which O_EXCL was not
# before NFSv3) and holding its owner: host, process id and a token unique to this hold. The
# holder touches it every HEARTBEAT_S seconds. A waiter takes it over when its owner is gone:
# at once when the owner ran on the waiter's own host and its process has ended; after
# MISSED_HEARTBEATS heartbeats without a change, judged on the waiter's own clock (never by
# comparing clocks across machines), when the owner ran elsewhere. `fcntl` locks are not
# used for this: on a shared filesystem they may be node-local without saying so (NFS mounted
# `nolock` or `local_lock=flock`, Lustre `localflock`, BeeGFS by default) or held forever by a
# node that crashed (NFSv3 lock recovery needs that node to reboot). Runs trained from a worktree
# pinned at an earlier commit (`grokutils.tools.longrun`) may use the store's plain lock: a plain
# process id in the file, held by `flock`, no heartbeat. The holder takes an `flock` on the file
# where one is offered, so that such a process waits for it, and such a lock is never taken over
# while its process lives.

HEARTBEAT_S = 10.0  # the holder touches its lock file this often
MISSED_HEARTBEATS = 12  # a waiter takes over a lock from another host unchanged for this many (2 min)
POLL_S = 0.5  # a waiter looks at the lock this often
HOST = socket.gethostname()


def lock_path(final: Path) -> Path:
    """The lock file of a run: `NAME.lock` beside its folder (ignored by git)."""
    return final.with_name(final.name + ".lock")


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock file: host, process id, and a token unique to that hold."""

    host: str
    pid: int
    token: str

    @property
    def plain(self) -> bool:
        """A plain lock: a process id alone, held by `flock`, with no heartbeat."""
        return self.token.startswith("plain-")

    def __str__(self) -> str:
        return f"process {self.pid} on {self.host}"


def parse_lock(text: str) -> LockOwner | None:
    """The owner a lock file's text names (None for an empty or garbled file); a plain
    process id (a plain lock, as `tools.longrun`'s pinned runs may write) is one of this host."""
    text = text.strip()
    if text.isdigit():
        return LockOwner(HOST, int(text), f"plain-{text}")
    try:
        fields = json.loads(text)
        return LockOwner(str(fields["host"]), int(fields["pid"]), str(fields["token"]))
    except (ValueError, TypeError, KeyError):
        return None


def read_lock(path: Path) -> tuple[LockOwner | None, tuple] | None:
    """The lock file's owner and a signature of its state (inode, mtime, size); None if there
    is no lock. Opening the file makes NFS fetch fresh attributes (close-to-open)."""
    try:
        with open(path) as handle:
            stat = os.fstat(handle.fileno())
            return parse_lock(handle.read()), (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        return None


def lock_owner(path: Path) -> LockOwner | None:
    """The owner of the lock file at `path` (None: no lock, or an unreadable one)."""
    state = read_lock(path)
    return state[0] if state else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def lock_is_live(path: Path, owner: LockOwner) -> bool:
    """True if `owner` of the lock at `path` seems to be working: its process lives (this host),
    or its heartbeat is recent (another host; judged by this host's clock, for reports only)."""
    if owner.host == HOST:
        return _process_alive(owner.pid)
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return False
    return not owner.plain and age < HEARTBEAT_S * MISSED_HEARTBEATS


def stale_reason(owner: LockOwner | None, unchanged_s: float) -> str | None:
    """Why a lock whose file has not changed for `unchanged_s` seconds is abandoned (None: it is not)."""
    if owner is not None and owner.host == HOST and not _process_alive(owner.pid):
        return f"{owner} has ended"
    if owner is not None and owner.plain:
        return None  # a plain lock: no heartbeat, but its process lives
    if unchanged_s > HEARTBEAT_S * MISSED_HEARTBEATS:
        return f"{owner or 'its owner'} missed {MISSED_HEARTBEATS} heartbeats ({unchanged_s:.0f} s unchanged)"
    return None


def _create(path: Path, text: str) -> bool:
    """Create `path` holding `text` unless it exists: a unique file, hard-linked to `path`. On
    NFS a lost reply can report a link that was made, so the unique file's link count decides.
    A filesystem without hard links gets an exclusive create instead."""
    unique = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    unique.write_text(text)
    try:
        os.link(unique, path)
        return True
    except FileExistsError:
        return os.stat(unique).st_nlink == 2
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        return _create_exclusive(path, text)
    finally:
        unique.unlink(missing_ok=True)


def _create_exclusive(path: Path, text: str) -> bool:
    """`_create` by O_EXCL, for filesystems without hard links; the text is written before the
    file is visible under `path` only in `_create`, so a reader may briefly see it empty."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    return True


def _break(path: Path, stale: LockOwner | None, me: LockOwner) -> bool:
    """Remove the abandoned lock of `stale`; True if this process did. One waiter at a time
    does it (a claim file named by the stale hold's token), and only if the file still names
    that hold."""
    claim = path.with_name(f"{path.name}.break-{stale.token if stale else 'unreadable'}")
    if not _create(claim, json.dumps(dataclasses.asdict(me))):
        with contextlib.suppress(FileNotFoundError):  # a breaker killed mid-break left its claim
            if time.time() - os.stat(claim).st_mtime > HEARTBEAT_S * MISSED_HEARTBEATS:
                claim.unlink()
        return False
    try:
        if lock_owner(path) != stale:
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        claim.unlink(missing_ok=True)


def _acquire(path: Path, final: Path, me: LockOwner) -> None:
    """Create the lock file as `me`, waiting (with one WARNING) while a live owner holds it."""
    text, seen, since, warned = json.dumps(dataclasses.asdict(me)), None, time.monotonic(), False
    while not _create(path, text):
        state = read_lock(path)
        if state is None:
            continue  # released just now
        owner, signature = state
        if signature != seen:
            seen, since = signature, time.monotonic()
        reason = stale_reason(owner, time.monotonic() - since)
        if reason is not None:
            if _break(path, owner, me):
                log.warning("%s: took over the abandoned lock %s: %s", final.name, path.name, reason)
                continue
        elif not warned:
            log.warning("%s: %s is computing this run; waiting for it to finish (lock %s)",
                        final.name, owner or "another process", path.name)
            warned = True
        time.sleep(POLL_S)


def _heartbeat(path: Path, me: LockOwner, stop: threading.Event) -> None:
    """Touch the lock file every HEARTBEAT_S seconds while `me` holds it."""
    while not stop.wait(HEARTBEAT_S):
        if lock_owner(path) != me:
            log.error("%s: the lock was taken over while this process held it (no heartbeat for "
                      "%.0f s?); another process may now compute this run too", path.name,
                      HEARTBEAT_S * MISSED_HEARTBEATS)
            return
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)


def _plain_flock(path: Path) -> IO | None:
    """An `flock` on the lock file, which holders of plain locks on this machine wait for; None
    where none is offered."""
    handle = open(path)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


@contextlib.contextmanager
def run_lock(final: Path) -> Iterator[None]:
    """Hold the run's lock file: one process at a time, on any machine that shares the results
    folder, computes a config; others wait, then load its result.

    A holder that dies leaves its `.partial` folder and its lock: a waiter on the same host
    takes over at once, one elsewhere after MISSED_HEARTBEATS heartbeats, and resumes. The
    holder removes the file when done (unless another took it over).
    """
    path = lock_path(Path(final))
    path.parent.mkdir(parents=True, exist_ok=True)
    me = LockOwner(HOST, os.getpid(), uuid.uuid4().hex)
    _acquire(path, Path(final), me)
    flock, stop = _plain_flock(path), threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, me, stop), name=f"heartbeat {path.name}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        if lock_owner(path) == me:
            path.unlink(missing_ok=True)
        if flock is not None:
            flock.close()


def set_aside(folder: Path) -> Path:
    """Rename a damaged run folder to `NAME.damaged` (or `.damaged-2`, ...), never deleting it:
    its data files may be intact (a garbled meta.json) and hours of training to recover."""
    aside, number = folder.with_name(folder.name + ".damaged"), 1
    while aside.exists():
        number += 1
        aside = folder.with_name(f"{folder.name}.damaged-{number}")
    os.replace(folder, aside)
    return aside


def remove_if_empty(folder: Path) -> None:
    """Remove `folder` if it holds no file (only empty folders): an early failure's leftovers."""
    if folder.is_dir() and not any(path.is_file() for path in folder.rglob("*")):
        shutil.rmtree(folder)


def load_or_compute(final: Path, config_class, compute: Callable[[], RunResult], layout: Layout = RUN) -> RunResult:
    """The run at `final` (a folder of `layout`): loaded if finished, else `compute()`d (it
    stores and returns it).

    Concurrent callers on one config: the second waits for the first (`run_lock`), then loads
    its result. A `final` folder that exists but is not finished is recomputed with a WARNING
    naming the folder and why. An early failure leaves no empty `.partial` folder behind.
    """
    final = Path(final)
    with run_lock(final):
        problem = run_problem(final, config_class, layout)
        if problem is None:  # finished while this process waited
            return _read_run(final, config_class, layout)
        if final.exists():
            aside = set_aside(final)
            log.warning("%s: stored run is damaged (%s); its files are kept as %s, and the run is "
                        "recomputing", final.name, problem, aside.name)
        try:
            return compute()
        finally:
            remove_if_empty(partial_dir(final))
