"""grokutils.tools.launch: a profile's runs as jobs (submitit), on a real one-node Slurm where this
host allows one (root, slurm-wlm: `make slurm`), else through submitit's local executor; and the
store's lock, which several machines sharing a results folder rely on."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import submitit
import torch

from grokutils import engine, store
from grokutils.config import MLPConfig
from grokutils.tools import launch

SMOKE_GRID = ["mlp", "--profile", "smoke", "--grid", "weight_decay=0,0.01"]
SHORT = ["--set", "steps=300", "--set", "n_checkpoints=6", "--cpus", "1"]  # not the profile's run: a short one
SHORT_CONFIGS = [MLPConfig(steps=300, n_seeds=2, n_checkpoints=6, weight_decay=decay) for decay in (0.0, 0.01)]


# --- the command line: plans, checks, dry run ----------------------------------------------------


def test_dry_run_prints_each_job_and_its_folder_and_submits_nothing(tmp_path, capsys):
    logs = tmp_path / "logs"
    assert launch.main([*SMOKE_GRID, "--dry-run", "--results-dir", str(tmp_path / "r"), "--log-dir", str(logs)]) == 0
    out = capsys.readouterr().out
    assert "2 job(s)" in out and "mlp-wd0-3000steps-2seeds-efeacd3cbc68" in out and "mlp-wd0.01-3000steps" in out
    assert "python -m grokutils.tools.train mlp --profile" in out
    assert not logs.exists() and not (tmp_path / "r").exists()


def test_the_default_plan_is_the_books_runs():
    """Without a grid: the MLP at the chapters' weight decays, the modular-addition run and its
    search; their folders are those the notebooks load (committed hashes)."""
    from grokutils import runs

    profile = runs.profile_path("smoke")
    planned, notes = launch.plan(["mlp", "modadd"], profile, {}, {}, store.Path("results"))
    expected = [runs.mlp_config(0.0, "smoke"), runs.mlp_config(0.01, "smoke"), runs.modadd_config("smoke")]
    assert [run.config for run in planned] == expected and notes == []


@pytest.mark.parametrize("arguments, message", [
    (["--grid", "wd=0,1"], "--grid names ['wd'], not fields of MLPConfig; accepted: ["),
    (["--grid", "weight_decay=-1"], "weight_decay must be a non-negative finite number, got -1"),
    (["--grid", "weight_decay="], "--grid takes FIELD=VALUE[,VALUE...], got 'weight_decay='"),
    (["--profile", "nope"], "unknown profile 'nope'; available: accelerated, paper, papers_float32, smoke"),
    (["--cpus", "0"], "cluster cpus_per_task must be a positive integer, got 0"),
    (["cnn"], "experiments ['cnn'] are not in profile smoke.yaml; accepted: ['mlp', 'modadd']"),
])
def test_bad_input_is_one_line_naming_the_value_before_any_job(arguments, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        launch.main(["--profile", "smoke", *arguments, "--log-dir", str(tmp_path / "logs"),
                     "--results-dir", str(tmp_path / "r")])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error
    assert not any(tmp_path.iterdir())


def test_cluster_block_of_the_profile_then_flags(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("runs:\n  mlp: {steps: 10}\ncluster:\n  partition: gpu\n  gpus_per_node: 1\n  timeout_min: 60\n")
    parameters = launch.cluster_parameters(profile, {"timeout_min": 5, "partition": None})
    assert parameters == {"cpus_per_task": 2, "timeout_min": 5, "partition": "gpu", "gpus_per_node": 1}
    profile.write_text("runs:\n  mlp: {steps: 10}\ncluster:\n  nodes: 2\n")
    with pytest.raises(ValueError, match=r"p.yaml: cluster sets 'nodes'; accepted: \['account'"):
        launch.cluster_parameters(profile, {})


def test_the_committed_profiles_cluster_blocks_are_valid():
    from grokutils import runs

    for name in runs.available_profiles():
        launch.cluster_parameters(runs.profile_path(name), {})


# --- the lock: an owner and a heartbeat, not flock --------------------------------------------


@pytest.fixture
def quick_heartbeat(monkeypatch):
    """Heartbeats every 0.05 s; a lock unchanged for 0.2 s (4 missed) is abandoned."""
    monkeypatch.setattr(store, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(store, "MISSED_HEARTBEATS", 4)
    monkeypatch.setattr(store, "POLL_S", 0.02)


def _write_lock(final, host: str, pid: int) -> None:
    store.lock_path(final).write_text(json.dumps({"host": host, "pid": pid, "token": "t0"}))


def test_a_lock_without_heartbeat_from_another_host_is_taken_over(tmp_path, quick_heartbeat, caplog):
    final = tmp_path / "run"
    _write_lock(final, "node-that-crashed", 12345)
    tic = time.monotonic()
    with caplog.at_level("WARNING", logger="grokutils"), store.run_lock(final):
        assert store.lock_owner(store.lock_path(final)).pid == os.getpid()
    assert 0.2 <= time.monotonic() - tic < 10
    assert ("took over the abandoned lock run.lock: process 12345 on node-that-crashed missed 4 heartbeats"
            in caplog.text)
    assert not store.lock_path(final).exists() and not list(tmp_path.glob("*break*"))


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    final = tmp_path / "run"
    _write_lock(final, store.HOST, int(dead.stdout))
    tic = time.monotonic()
    with caplog.at_level("WARNING", logger="grokutils"), store.run_lock(final):
        pass
    assert time.monotonic() - tic < 5 and "has ended" in caplog.text


HOLD_FROM_ANOTHER_HOST = """
import sys, time
from pathlib import Path
from grokutils import store
store.HOST, store.HEARTBEAT_S = "other-node", 0.05  # a holder on another machine, beating fast
with store.run_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_live_lock_from_another_host_is_not_taken_over(tmp_path, quick_heartbeat, caplog):
    """The holder beats every 0.05 s; the waiter would take over after 0.2 s unchanged, but it
    waits the holder's 3 s out."""
    final = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_FROM_ANOTHER_HOST, str(final), "3"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert store.lock_owner(store.lock_path(final)).host == "other-node"
        tic = time.monotonic()
        with caplog.at_level("WARNING", logger="grokutils"), store.run_lock(final):
            waited = time.monotonic() - tic
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()
        holder.stdout.close()
    assert waited > 2.0, waited
    assert "is computing this run; waiting" in caplog.text and "took over" not in caplog.text


def test_two_waiters_on_an_abandoned_lock_take_it_one_at_a_time(tmp_path, quick_heartbeat):
    final, inside, overlaps = tmp_path / "run", [], []
    _write_lock(final, "node-that-crashed", 1)

    def work():
        with store.run_lock(final):
            inside.append(1)
            overlaps.append(len(inside))
            time.sleep(0.3)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert overlaps == [1, 1, 1]


def test_status_reads_the_new_lock_and_the_legacy_one(tmp_path):
    from grokutils.tools import status

    final = tmp_path / "run"
    _write_lock(final, store.HOST, os.getpid())
    assert status.lock_holder(final) == os.getpid()
    _write_lock(final, "other-node", 7)
    os.utime(store.lock_path(final), (time.time() - 3600, time.time() - 3600))  # no heartbeat for an hour
    assert status.lock_holder(final) is None
    store.lock_path(final).write_text(str(os.getpid()))  # an older version's lock: a plain process id
    assert status.lock_holder(final) == os.getpid()


# --- jobs through submitit's local executor -----------------------------------------------------


def _local_reference(tmp_path_factory):
    """The short grid's runs trained in this process, as a user would without a cluster."""
    results = tmp_path_factory.mktemp("trained-here")
    tic = time.perf_counter()
    finished = [engine.run(config, results_dir=results, device="cpu", n_workers=0, threads=1, progress=False)
                for config in SHORT_CONFIGS]
    logging.getLogger(__name__).warning("trained here: %.0f s for %d runs", time.perf_counter() - tic, len(finished))
    return finished


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _local_reference(tmp_path_factory)


def assert_same_run(folder, expected) -> None:
    """Sealed, and the same tables and final weights as `expected` (a RunResult)."""
    assert store.is_complete(folder), store.seal_problem(folder)
    result = store.load_run(folder, MLPConfig)
    pd.testing.assert_frame_equal(result.curves, expected.curves)
    pd.testing.assert_frame_equal(result.layers, expected.layers)
    for seed in range(expected.config.n_seeds):
        for name, tensor in expected.weights(seed, "final").items():
            assert torch.equal(result.weights(seed, "final")[name], tensor), (seed, name)


@pytest.mark.slow
def test_local_executor_runs_the_grid_and_a_failed_job_is_named(tmp_path, reference, capsys):
    """One run's folder is blocked by a file: that job fails, is named with its log and folder,
    and the other run is stored all the same, equal to the run trained here."""
    results = tmp_path / "results"
    results.mkdir()
    blocked = store.partial_dir(store.run_dir(SHORT_CONFIGS[1], results))
    blocked.write_text("a file where the run's work folder goes")
    code = launch.main([*SMOKE_GRID, *SHORT, "--executor", "local", "--wait", "--results-dir", str(results),
                        "--log-dir", str(tmp_path / "logs")])
    out = capsys.readouterr().out
    assert code == 1
    assert "finished: job" in out and str(reference[0].path.name) in out
    failed = out[out.index("FAILED"):]
    assert "log: " + str(tmp_path / "logs") in failed and f"run folder: {blocked.with_suffix('')}" in failed
    assert_same_run(store.run_dir(SHORT_CONFIGS[0], results), reference[0])
    blocked.unlink()  # the other run, launched again, trains; the stored one is not submitted
    assert launch.main([*SMOKE_GRID, *SHORT, "--executor", "local", "--wait", "--results-dir", str(results),
                        "--log-dir", str(tmp_path / "logs")]) == 0
    out = capsys.readouterr().out
    assert "1 job(s)" in out and f"stored: {store.run_dir(SHORT_CONFIGS[0], results)} (not submitted)" in out
    assert_same_run(store.run_dir(SHORT_CONFIGS[1], results), reference[1])


def _job_arguments(config, results, cpus: int = 1) -> list[str]:
    from grokutils import runs

    run = launch.PlannedRun("mlp", {"weight_decay": config.weight_decay, "steps": config.steps,
                                    "n_checkpoints": config.n_checkpoints}, config, store.run_dir(config, results))
    return run.train_arguments(runs.profile_path("smoke"), results, "cpu", cpus)


def _local_executor(folder) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="local")
    executor.update_parameters(timeout_min=60)
    return executor


@pytest.mark.slow
def test_two_jobs_on_one_run_at_once_train_it_once(tmp_path, reference):
    results, config = tmp_path / "results", SHORT_CONFIGS[0]
    executor, folder = _local_executor(tmp_path / "logs"), str(store.run_dir(config, results))
    jobs = [executor.submit(launch.RunJob(_job_arguments(config, results), folder)) for _ in range(2)]
    assert [job.result() for job in jobs] == [folder, folder]
    logs = [job.stderr() or "" for job in jobs]
    assert sum("is computing this run; waiting for it to finish" in text for text in logs) == 1, logs
    assert_same_run(folder, reference[0])
    job = executor.submit(launch.RunJob(_job_arguments(config, results), folder))  # finished: loads and exits
    tic = time.monotonic()
    assert job.result() == folder and "finished:" in job.stdout()
    assert time.monotonic() - tic < 120


def _wait_for_saved_state(partial, process_alive, least: int = 31, timeout_s: float = 900.0) -> int:
    """The lowest step saved by every seed of a running run, once each seed saved `least` (31: the
    fifth of the short run's checkpoints 0, 1, 3, 10, 31, 96, 300)."""
    deadline = time.monotonic() + timeout_s
    from grokutils.tools.status import saved_steps

    while time.monotonic() < deadline and process_alive():
        steps = saved_steps(partial)
        if len(steps) == 2 and min(steps) >= least:
            return min(steps)
        time.sleep(0.5)
    raise AssertionError(f"no saved state in {partial} within {timeout_s} s")


@pytest.mark.slow
def test_local_job_stopped_by_the_signal_is_requeued_and_resumes(tmp_path, reference):
    """submitit's preemption signal (USR2) to the job's process: it checkpoints, is requeued
    (restarted by the local executor) and resumes from the store to the same run."""
    results, config = tmp_path / "results", SHORT_CONFIGS[0]
    folder = store.run_dir(config, results)
    job = _local_executor(tmp_path / "logs").submit(launch.RunJob(_job_arguments(config, results), str(folder)))
    saved = _wait_for_saved_state(store.partial_dir(folder), lambda: not job.done())
    owner = store.lock_owner(store.lock_path(folder))
    os.kill(owner.pid, signal.SIGUSR2)
    assert job.result() == str(folder)
    log = job.stderr()
    assert "stopped by the scheduler; requeued, to resume from step" in log
    resumed = int(log.split("resuming from step ")[1].split()[0])
    assert resumed >= saved
    assert_same_run(folder, reference[0])


# --- a real Slurm: one node, this host ------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm for this module (tests/slurm_cluster.py); clients find it by SLURM_CONF."""
    import slurm_cluster

    reason = slurm_cluster.missing()
    if reason:
        pytest.skip(f"no one-node Slurm here ({reason}); the launcher's jobs are tested through submitit's "
                    "local executor above")
    cluster = slurm_cluster.OneNodeCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    if before is None:
        os.environ.pop("SLURM_CONF")
    else:
        os.environ["SLURM_CONF"] = before
    cluster.stop()


@pytest.mark.slow
def test_slurm_runs_the_smoke_grid_equal_to_runs_trained_here(slurm, tmp_path, reference, capsys):
    results = tmp_path / "results"
    tic = time.perf_counter()
    code = launch.main([*SMOKE_GRID, *SHORT, "--executor", "slurm", "--wait", "--results-dir", str(results),
                        "--log-dir", str(tmp_path / "logs")])
    wall = time.perf_counter() - tic
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("finished: job") == 2
    for config, expected in zip(SHORT_CONFIGS, reference):
        assert_same_run(store.run_dir(config, results), expected)
    logging.getLogger(__name__).warning("through Slurm: %.0f s for the grid's 2 jobs", wall)


@pytest.mark.slow
def test_slurm_job_signalled_midway_is_requeued_and_finishes_the_same(slurm, tmp_path, reference):
    """`scancel --signal=USR2` (what Slurm sends before a time limit, `--signal=USR2@90`): submitit
    checkpoints, `scontrol requeue`s the job, and the requeued job resumes from the store."""
    results, config = tmp_path / "results", SHORT_CONFIGS[1]
    folder = store.run_dir(config, results)
    executor = launch.make_executor("slurm", tmp_path / "logs", {"cpus_per_task": 1, "timeout_min": 60}, "requeue")
    job = executor.submit(launch.RunJob(_job_arguments(config, results), str(folder)))
    saved = _wait_for_saved_state(store.partial_dir(folder), lambda: launch.in_queue(job))
    slurm.run("scancel", "--signal=USR2", job.job_id)
    launch.wait_for([job])
    assert job.result() == str(folder)
    log = job.stderr()
    assert "stopped by the scheduler; requeued, to resume from step" in log
    resumed = int(log.split("resuming from step ")[1].split()[0])
    assert resumed >= saved
    restarts = slurm.run("scontrol", "show", "job", job.job_id).stdout
    assert "Restarts=1" in restarts, restarts
    assert_same_run(folder, reference[1])
    logging.getLogger(__name__).warning("Slurm job %s: signalled after step %d, resumed from step %d",
                                        job.job_id, saved, resumed)
