"""grokutils.tools.status and grokutils.tools.longrun: unfinished runs, their rate, snapshots."""
from __future__ import annotations

import os

import pytest
import torch

from grokutils import store, train
from grokutils.tools import longrun, status


def test_recent_rate_uses_the_window_before_the_last_sample():
    samples = [[0.0, 0], [100.0, 1000], [200.0, 3000], [300.0, 5000]]
    assert status.recent_rate(samples, window_s=1000) == pytest.approx(5000 / 300)
    assert status.recent_rate(samples, window_s=150) == pytest.approx(20.0)  # the last two samples
    assert status.recent_rate(samples[:1], window_s=150) is None


def _partial(results, name, steps, samples=None, total=10_000):
    partial = results / f"{name}.partial"
    for seed, step in enumerate(steps):
        train.save_state(_mkdir(partial / f"seed{seed}"), {"model": {}, "optimizer": {}, "step": step,
                                                             "status": "running"})
    if samples is not None:
        (partial / "progress.json").write_text(
            f'{{"pid": 1, "total_steps": {total}, "seeds": [0], "started": [0, 0], "samples": {samples}}}')
    return partial


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_status_lists_unfinished_runs_with_rate_and_time_left(tmp_path):
    _partial(tmp_path, "mlp-a", [4000, 3500], samples=[[0, 1000], [1000, 5000]])
    final = tmp_path / "mlp-a"
    store.lock_path(final).write_text(str(os.getpid()))  # "held" by a live process: this one
    _partial(tmp_path, "mlp-b", [100])
    (tmp_path / "mlp-c").mkdir()  # a finished-looking folder is not listed
    rows = {row.name: row for row in status.unfinished(tmp_path)}
    assert sorted(rows) == ["mlp-a", "mlp-b"]
    a, b = rows["mlp-a"], rows["mlp-b"]
    assert (a.running, a.step, a.resumes_from, a.rate) == (True, 5000, 3500, 4.0)
    assert a.hours_left == pytest.approx(5000 / 4.0 / 3600)
    assert (b.running, b.step, b.resumes_from, b.rate, b.hours_left) == (False, None, 100, None, None)
    table = status.format_table(list(rows.values()))
    assert "mlp-a" in table and "running" in table and "stopped" in table


def test_status_refuses_a_missing_results_dir(tmp_path, capsys):
    with pytest.raises(SystemExit):
        status.main(["--results-dir", str(tmp_path / "nope")])
    assert "is not a folder" in capsys.readouterr().err


def test_copy_state_takes_the_resumable_files_and_replaces_the_target(tmp_path):
    source = _partial(tmp_path / "work", "run", [700, 700])
    (source / "seed0" / "weights").mkdir()
    (source / "seed0" / "weights" / "step_000000000.safetensors").write_bytes(b"w")
    (source / "seed0" / "weights" / "step_000000800.safetensors").write_bytes(b"w")  # after the state: left out
    (source / "seed0" / "measures").mkdir()
    (source / "seed0" / "measures" / "step_000000800.npz").write_bytes(b"m")
    (source / "seed0" / "stray.tmp").write_bytes(b"x")
    target = _partial(tmp_path / "snap", "run", [100])
    (target / "seed0" / "old.txt").write_text("old")
    longrun.copy_state(source, target)
    files = sorted(str(path.relative_to(target)) for path in target.rglob("*") if path.is_file())
    assert files == ["seed0/state.pt", "seed0/weights/step_000000000.safetensors", "seed1/state.pt"]
    assert torch.load(target / "seed1" / "state.pt", weights_only=True)["step"] == 700
    assert not list(target.parent.glob("*.copying")) and not list(target.parent.glob("*.old"))


def test_a_spec_with_a_bad_commit_or_field_is_refused(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("commit: 0000000\nruns:\n  - {experiment: mlp, sets: {lr: 0.0005}}\n")
    with pytest.raises(ValueError, match="commit must name a commit"):
        longrun.read_spec(spec)
    spec.write_text("commit: HEAD\nruns:\n  - {experiment: mlp, sets: {learning_rate: 0.0005}}\n")
    with pytest.raises(ValueError, match="learning_rate"):
        longrun.read_spec(spec)
    spec.write_text("commit: HEAD\nruns: []\n")
    with pytest.raises(ValueError, match="non-empty list"):
        longrun.read_spec(spec)


def test_the_committed_spec_names_valid_runs_and_arguments():
    spec = longrun.read_spec(longrun.REPO_ROOT / "longruns" / "papers_protocol.yaml")
    assert len(spec.runs) == 2 and spec.threads == 1
    for run in spec.runs:
        arguments = run.train_arguments()
        assert arguments[:3] == ["mlp", "--profile", run.profile]
        assert "--set=lr=0.0005" in arguments and "--set=dtype=float32" in arguments
        assert run.name.startswith("mlp-wd") and "10000000steps-3seeds" in run.name


def test_the_ledger_keeps_every_process_and_closes_the_last_from_the_sealed_run(tmp_path):
    import json

    ledger = longrun.ledger_path(tmp_path / "spec.yaml")
    assert ledger.name == "spec.ledger.json" and longrun.ledger_table(ledger).empty
    first = {"started": [1_000.0, 0], "samples": [[1_060.0, 100], [4_600.0, 36_000]]}
    longrun.record_segment(ledger, "run", longrun.segment_of(first, cpu="cpu A"))
    first["samples"].append([8_200.0, 72_000])  # a later snapshot of the same process updates it
    longrun.record_segment(ledger, "run", longrun.segment_of(first, cpu="cpu A"))
    second = {"started": [10_000.0, 70_000], "samples": [[13_600.0, 106_000]]}  # resumed 2,000 steps back
    longrun.record_segment(ledger, "run", longrun.segment_of(second, cpu="cpu B"))
    sealed = tmp_path / "sealed"
    sealed.mkdir()
    (sealed / "meta.json").write_text(json.dumps({"status": {"0": {"status": "finished", "step": 120_000}},
                                                  "timings": {"wall_s": 5_000.0}}))
    os.utime(sealed / "meta.json", (15_000.0, 15_000.0))  # the second process ran 10,000 s .. 15,000 s
    longrun.close_last_segment(ledger, "run", sealed)
    table = longrun.ledger_table(ledger)
    assert table["from step"].tolist() == [0, 70_000] and table["to step"].tolist() == [72_000, 120_000]
    assert table.hours.tolist() == pytest.approx([2.0, 5_000 / 3600])
    assert table["steps/s"].tolist() == pytest.approx([10.0, 10.0])
    assert table["steps trained again"].tolist() == [0, 2_000] and table.cpu.tolist() == ["cpu A", "cpu B"]
    os.utime(sealed / "meta.json", (99_000.0, 99_000.0))  # a process the ledger never saw: start unknown
    longrun.close_last_segment(ledger, "run", sealed)
    assert longrun.ledger_table(ledger)["from step"].isna().tolist() == [False, False, True]
    ledger.write_text("[]")
    with pytest.raises(ValueError, match="a ledger maps 'runs'"):
        longrun.read_ledger(ledger)


def test_the_committed_ledger_reads_and_runs_on_from_step_zero():
    spec_file = longrun.REPO_ROOT / "longruns" / "papers_protocol.yaml"
    table = longrun.ledger_table(longrun.ledger_path(spec_file))
    names = {run.name for run in longrun.read_spec(spec_file).runs}
    assert set(table.run) == names
    for _, rows in table.groupby("run"):
        assert rows["from step"].iloc[0] == 0 and (rows.hours > 0).all()
        # no gap: a process resumes at or before where the last one's progress file left off, give or
        # take the steps of one progress interval (PROGRESS_EVERY_S) saved after its last sample
        assert (rows["from step"].iloc[1:].to_numpy() <= rows["to step"].iloc[:-1].to_numpy() + 10_000).all()


def test_start_records_a_stopped_process_of_this_machine_before_it_resumes(tmp_path, monkeypatch):
    spec = longrun.read_spec(longrun.REPO_ROOT / "longruns" / "papers_protocol.yaml")
    monkeypatch.setattr(longrun, "WORKTREES", tmp_path / "worktrees")
    monkeypatch.setattr(longrun, "SNAPSHOTS", tmp_path / "snapshots")  # none: nothing to restore
    launched = []
    monkeypatch.setattr(longrun, "launch", lambda spec, run, core, log: launched.append(run.name))
    (spec.worktree / "grokutils").mkdir(parents=True)
    run = spec.runs[0]
    partial = _partial(spec.worktree / "results", run.name, [5_000, 5_000], samples=[[3_600.0, 5_200]])
    ledger = tmp_path / "spec.ledger.json"
    longrun.start(spec, ledger)
    assert launched == [one.name for one in spec.runs]
    table = longrun.ledger_table(ledger)
    assert table.run.tolist() == [run.name] and table["to step"].tolist() == [5_200], table
    assert (partial / "progress.json").is_file()


def test_cost_values_sum_a_ledger_up_per_run_and_say_so(tmp_path):
    from grokutils import prose

    ledger = tmp_path / "spec.ledger.json"
    for name, cpu in (("run-a", "cpu A"), ("run-b", "not recorded")):
        longrun.record_segment(ledger, name, longrun.segment_of({"started": [0.0, 0], "samples": [[3_600.0, 36_000]]},
                                                                cpu=cpu))
        longrun.record_segment(ledger, name, longrun.segment_of(
            {"started": [7_200.0, 35_000], "samples": [[10_800.0, 71_000]]}, cpu=cpu))
    rows = longrun.ledger_rows(["run-a", "run-b", "run-c"], folder=tmp_path)
    assert len(rows) == 4 and longrun.ledger_rows(["other"], folder=tmp_path).empty
    cost = longrun.cost_values(rows)
    assert (cost["n_runs"], cost["processes"], cost["hours"]) == (2, [2], [2.0, 2.0])
    assert cost["rate"] == pytest.approx(72_000 / 7_200) and (cost["rate_low"], cost["rate_high"]) == (10.0, 10.0)
    assert (cost["again"], cost["cpus"], cost["unrecorded"]) == (2_000, ["cpu A"], 2)
    assert "2.0 and 2.0 hours of wall time for the 2 runs" in prose.say("longrun.cost", cost)
    assert longrun.cost_values(rows.iloc[:0]) == {"n_runs": 0}
    assert "no ledger" in prose.say("longrun.cost", {"n_runs": 0})


def test_the_papers_float32_profile_reads_the_long_runs_of_the_committed_spec():
    """The profile the book switches to once the long runs are sealed names exactly those runs."""
    from grokutils import runs

    spec = longrun.read_spec(longrun.REPO_ROOT / "longruns" / "papers_protocol.yaml")
    named = {store.run_dir(runs.mlp_config(wd, "papers_float32"), longrun.RESULTS_DIR).name for wd in (0.0, 0.01)}
    assert named == {run.name for run in spec.runs}
    # and in nothing else does it differ from the accelerated profile: once it is the default, every
    # other chapter reads the runs already committed, so `make book` trains nothing
    papers, accelerated = runs.read_profile("papers_float32"), runs.read_profile("accelerated")
    assert {**papers, "runs": {**papers["runs"], "mlp": None}} == {**accelerated, "runs": {**accelerated["runs"],
                                                                                          "mlp": None}}


def _measures(partial, config, last_step, test_of_step, seeds=(0, 1, 2)):
    """Measures files of a `.partial` folder at the config's checkpoints up to `last_step`: train held at
    1, test accuracy `test_of_step(step)`, FC1 alpha falling with the steps, one FC2 trap."""
    import json

    import numpy as np

    from grokutils.engine import measures_path

    for seed in seeds:
        for step in (step for step in config.checkpoint_steps if step <= last_step):
            rows = {"model": {"train_accuracy": 1.0 if step >= 300 else 0.5, "test_accuracy": test_of_step(step)},
                    "layers": [{"layer": "fc1", "alpha": 5.0 - np.log10(step + 1) / 2, "traps": 0},
                               {"layer": "fc2", "alpha": 3.0, "traps": 1}]}
            path = measures_path(partial / f"seed{seed}", step)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, rows=json.dumps(rows))


def test_preview_reads_the_curves_so_far_from_the_worktree_else_the_snapshot(tmp_path, monkeypatch):
    import numpy as np

    spec = longrun.read_spec(longrun.REPO_ROOT / "longruns" / "papers_protocol.yaml")
    monkeypatch.setattr(longrun, "WORKTREES", tmp_path / "worktrees")
    monkeypatch.setattr(longrun, "SNAPSHOTS", tmp_path / "snapshots")
    assert longrun.preview(spec).empty  # nothing measured anywhere
    wd0, wd001 = (longrun.config_of(run.experiment, run.profile, run.sets) for run in spec.runs)

    def rise_and_fall(step):  # up to 0.85 by 1e5 steps, held to 5e5, then down to 0.55 by 4e6
        rise = np.clip(np.log10(step + 1) - 2, 0, 3) / 3
        fall = np.clip(np.log10(step + 1) - np.log10(5e5), 0, None) / np.log10(8)
        return float(0.1 + 0.75 * rise - 0.3 * min(fall, 1.0))

    _measures(store.partial_dir(spec.worktree / "results" / spec.runs[0].name), wd0, 4_000_000, rise_and_fall)
    _measures(longrun.SNAPSHOTS / f"{spec.runs[1].name}.partial", wd001, 2_000_000,
              lambda step: 0.1 + 0.8 * float(np.clip(np.log10(step + 1) - 2, 0, 3) / 3))
    table = longrun.preview(spec).set_index(["run", "seed"])
    assert len(table) == 6
    falling, steady = table.loc[spec.runs[0].name], table.loc[spec.runs[1].name]
    last_wd0 = max(step for step in wd0.checkpoint_steps if step <= 4_000_000)
    assert (falling.step == last_wd0).all() and falling.test.to_numpy() == pytest.approx(rise_and_fall(last_wd0))
    assert (falling.peak > 0.8).all() and (falling["held fall"] > 0.2).all()
    assert falling.verdict.str.startswith("anti-groks").all(), falling.verdict
    assert steady.verdict.str.contains("under the 0.05 bar").all(), steady.verdict  # read from the snapshot
    assert (falling["fc2 traps"] == 1).all() and falling["fc1 alpha"].to_numpy() == pytest.approx(
        5.0 - np.log10(last_wd0 + 1) / 2)
