"""The training-loop monitor: alarms on planted traps, quiet on random layers, survives its worker."""
from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from grokutils.alarm_eval import first_alarms, lead_times
from grokutils.tools.alarm_log import alarm_reasons
from grokutils.tools.monitor import AlarmStop, AlarmWarning, Monitor, analyzed_modules, read_log, snapshot

WIDTH = 100  # 100 x 100 layers: the smallest WeightWatcher neither pools nor skips


def toy_model(plant: float | None = None) -> nn.Sequential:
    """Two 100 x 100 Linear layers; `plant` puts one large entry into the first (a trap)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH))
    if plant is not None:
        with torch.no_grad():
            model[0].weight[3, 7] = plant
    return model


def train(model: nn.Module, monitor: Monitor, steps: int) -> int:
    """A plain SGD loop with the monitor's one line; returns the steps done."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(32, WIDTH, generator=torch.Generator().manual_seed(1)), torch.zeros(32, WIDTH)
    monitor.step(0)
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.step()
        monitor.step(step)
    return step


def fake_analyzer(matrices, seed, **_):
    """Cheap stand-in for analyze_matrices: alpha 1.5 for layer '0', 4.0 elsewhere, no traps."""
    return pd.DataFrame({"alpha": [1.5 if name == "0" else 4.0 for name in matrices], "traps": 0},
                        index=pd.Index(list(matrices), name="layer"))


def strict_analyzer(matrices, seed, **_):
    """fake_analyzer that refuses non-finite matrices, as analyze_matrices does."""
    for name, matrix in matrices.items():
        if not np.isfinite(matrix).all():
            raise ValueError(f"matrix {name!r} holds NaN or Inf values")
    return fake_analyzer(matrices, seed)


def failing_analyzer(matrices, seed, **_):
    """An analysis that raises."""
    raise np.linalg.LinAlgError("SVD did not converge")


def dying_analyzer(matrices, seed, **_):
    """Kills its worker process on the first snapshot (seed 0 = step 0), then analyzes cheaply."""
    if seed == 0:
        os._exit(3)
    return fake_analyzer(matrices, seed)


def test_planted_trap_alarms_and_random_layer_stays_quiet(tmp_path):
    # The planted entry is ~50x the init scale (sd 0.058): far above the BBP threshold
    # sd * (N M)^(1/4) = 0.58, so the shuffled matrix has one eigenvalue out of the MP bulk.
    model, log_path = toy_model(plant=3.0), tmp_path / "log.csv"
    with pytest.warns(AlarmWarning, match=r"layer '0': 1 trap") as caught:
        with Monitor(model, steps=[0, 10], log_path=log_path, worker="thread", max_traps=0) as monitor:
            assert train(model, monitor, 10) == 10
    assert len([w for w in caught if issubclass(w.category, AlarmWarning)]) == 1  # once per layer and kind
    table = monitor.log
    assert table.groupby("layer").alarm.all().to_dict() == {"0": True, "2": False}
    assert (table[table.layer == "2"].alpha > 2).all() and (table[table.layer == "2"].traps == 0).all()
    assert monitor.should_stop
    assert table.step.tolist() == [0, 0, 10, 10] and (table.error == "").all()
    pd.testing.assert_frame_equal(read_log(log_path)[["step", "layer", "alpha", "traps", "alarm", "reason"]],
                                  table[["step", "layer", "alpha", "traps", "alarm", "reason"]], check_dtype=False)


@pytest.mark.filterwarnings("ignore::grokutils.tools.monitor.AlarmWarning")
def test_worker_process_that_dies_does_not_stop_training(tmp_path, caplog):
    model = toy_model()
    with caplog.at_level(logging.ERROR, logger="grokutils.tools.monitor"):
        with Monitor(model, steps=[0, 5], log_path=tmp_path / "log.parquet", analyzer=dying_analyzer) as monitor:
            assert train(model, monitor, 8) == 8
    table = read_log(tmp_path / "log.parquet")
    assert table[table.step == 0].error.str.startswith("worker died").all()
    assert (table[table.step == 5].error == "").all()  # a fresh worker took over
    assert table[table.step == 5].alpha.tolist() == [1.5, 4.0]
    assert "worker died" in caplog.text


def test_failed_analysis_is_logged_and_training_goes_on(caplog):
    model = toy_model()
    with caplog.at_level(logging.ERROR, logger="grokutils.tools.monitor"):
        with Monitor(model, total_steps=20, n_checkpoints=3, worker="thread", analyzer=failing_analyzer) as monitor:
            assert train(model, monitor, 20) == 20
    table = monitor.log
    assert sorted(table.step.unique()) == monitor.schedule
    assert (table.error == "LinAlgError: SVD did not converge").all() and not table.alarm.any()
    assert "HTSR analysis of step 0 failed" in caplog.text


def test_raise_on_alarm_raises_alarm_stop_once():
    model = toy_model()
    monitor = Monitor(model, steps=[0], worker="thread", analyzer=fake_analyzer, raise_on_alarm=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AlarmWarning)
        with pytest.raises(AlarmStop, match=r"step 0, layer '0': alpha 1.50 < 2") as stopped:
            monitor.step(0)
            monitor.close()  # waits: the next step() raises
            monitor.step(1)
        monitor.step(2)  # raised once only
    assert stopped.value.alarms.layer.tolist() == ["0"]


def test_conv_layers_are_unfolded_and_layers_can_be_chosen():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Flatten(), nn.Linear(16, 12), nn.Linear(12, 9))
    modules = analyzed_modules(model)
    assert list(modules) == ["0", "2"]  # 9 eigenvalues: too few for WeightWatcher
    assert {name: m.shape for name, m in snapshot(modules).items()} == {"0": (16, 27), "2": (12, 16)}
    assert snapshot(modules)["0"].dtype == np.float64
    assert list(analyzed_modules(model, ["2"])) == ["2"]
    with pytest.raises(ValueError, match=r"got \['fc9'\]; available: \['0', '2'\]"):
        analyzed_modules(model, ["fc9"])


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of total_steps or steps"),
    ({"total_steps": 10, "steps": [1]}, "exactly one of total_steps or steps"),
    ({"total_steps": -5}, "total_steps must be a positive integer, got -5"),
    ({"total_steps": 10, "log_path": "log.json"}, r"log_path must end in one of \('.csv', '.parquet'\)"),
    ({"total_steps": 10, "worker": "gpu"}, "worker must be 'process' or 'thread', got 'gpu'"),
])
def test_bad_arguments_are_rejected_before_work(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Monitor(toy_model(), **kwargs)


def test_by_default_a_trap_is_logged_not_alarmed(tmp_path):
    model = toy_model(plant=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AlarmWarning)
        with Monitor(model, steps=[0, 10], worker="thread") as monitor:
            assert train(model, monitor, 10) == 10
    table = monitor.log
    assert (table[table.layer == "0"].traps >= 1).any() and not table.alarm.any() and not monitor.should_stop


def test_alarm_reasons_read_alpha_and_traps():
    frame = pd.DataFrame({"alpha": [1.2, 3.0, np.nan, 1.9], "traps": pd.array([0, 2, 1, pd.NA], dtype="Int64")})
    assert alarm_reasons(frame, max_traps=0).tolist() == ["alpha 1.20 < 2", "2 traps", "1 trap", "alpha 1.90 < 2"]
    assert alarm_reasons(frame).tolist() == ["alpha 1.20 < 2", "", "", "alpha 1.90 < 2"]  # default: traps only logged
    assert alarm_reasons(frame.assign(alpha=5.0), max_traps=1).tolist() == ["", "2 traps", "", ""]


def test_lead_times_per_seed():
    layers = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2], "step": [10, 100, 10, 100, 10, 100], "layer": "fc1",
                           "alpha": [3.0, 1.5, 3.0, 3.0, 3.0, 3.0], "traps": [0, 0, 0, 0, 0, 1]})
    steps = [10, 100, 1000]
    curves = pd.DataFrame({"seed": np.repeat([0, 1, 2], 3), "step": steps * 3, "train_accuracy": 1.0,
                           "test_accuracy": [0.9, 0.9, 0.5, 0.9, 0.9, 0.9, 0.9, 0.5, 0.5]})
    table = lead_times(layers, curves)
    assert table.first_alarm.tolist() == [100, pd.NA, 100]
    assert table.t_collapse.tolist() == [1000, pd.NA, 100]
    assert table.lead_steps.tolist() == [900, pd.NA, 0]
    assert table.verdict.tolist() == ["alarm before collapse", "no alarm, no collapse within the run",
                                      "alarm before collapse"]
    assert first_alarms(layers, watched=["fc2"]).first_alarm.isna().all()


def test_non_finite_weights_are_the_loudest_alarm(caplog):
    """A NaN in one layer: that layer alarms at once (warning, should_stop, AlarmStop), the
    healthy layer keeps its analyzed row, and no analysis error is logged."""
    model = toy_model()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    monitor = Monitor(model, steps=[0], worker="thread", analyzer=strict_analyzer, raise_on_alarm=True)
    with caplog.at_level(logging.ERROR, logger="grokutils"), pytest.warns(AlarmWarning, match=r"layer '0': non-finite"):
        with pytest.raises(AlarmStop, match=r"step 0, layer '0': non-finite weights"):
            monitor.step(0)
        table = monitor.close()
    assert monitor.should_stop and not caplog.text
    assert table.set_index("layer").alarm.to_dict() == {"0": True, "2": False}
    assert table.set_index("layer").alpha["2"] == 4.0


UNGUARDED = """
import torch
from torch import nn
from grokutils.tools.monitor import Monitor

print("TRAINING STARTS", flush=True)  # module level, no main guard: a multiprocessing worker would print it again
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 100))
with torch.no_grad():
    model[0].weight[3, 7] = 3.0  # a planted trap
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
x = torch.randn(32, 100, generator=torch.Generator().manual_seed(1))
monitor = Monitor(model, steps=[0, 10], max_traps=0)
monitor.step(0)
for step in range(1, 11):
    optimizer.zero_grad()
    (model(x) ** 2).mean().backward()
    optimizer.step()
    monitor.step(step)
monitor.close()
print("ALARMS", len(monitor.alarms), "ERRORS", int((monitor.log.error != "").sum()), flush=True)
"""


@pytest.mark.slow
def test_a_script_without_a_main_guard_trains_once_and_gets_its_alarms(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("TRAINING STARTS") == 1, done.stdout
    assert "ALARMS 2 ERRORS 0" in done.stdout, done.stdout + done.stderr[-2000:]  # layer '0' at steps 0 and 10
    assert "worker died" not in done.stderr


def test_the_worker_program_reports_results_errors_and_its_death():
    from concurrent.futures.process import BrokenProcessPool

    from grokutils.tools.monitor_worker import ProgramExecutor

    executor = ProgramExecutor()
    assert executor.submit(divmod, 17, 5).result(timeout=120) == (3, 2)
    with pytest.raises(ZeroDivisionError):
        executor.submit(divmod, 1, 0).result(timeout=60)
    dying = executor.submit(os._exit, 3)
    with pytest.raises(BrokenProcessPool, match="exited"):
        dying.result(timeout=60)
    with pytest.raises(BrokenProcessPool):
        executor.submit(divmod, 1, 1)
    executor.shutdown()


def test_a_model_on_the_meta_device_is_refused_before_work():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH))
    with pytest.raises(ValueError, match=r"layers \['0', '2'\] have weights on the 'meta' device"):
        Monitor(model, total_steps=10, worker="thread")
