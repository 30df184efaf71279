"""grokutils.tools.bench: the command line checks its input, and a tiny run prints every row."""
from __future__ import annotations

import re

import pytest
from test_batched import BITWISE  # whether batched and plain float64 gradients agree bitwise here

from grokutils.tools import bench


@pytest.mark.parametrize("flag, value", [("--processes", "0"), ("--steps", "0"), ("--seeds", "-1")])
def test_bad_counts_are_named(flag, value, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args([flag, value])
    assert f"{flag} must be a positive integer, got {value}" in capsys.readouterr().err


@pytest.mark.slow
def test_a_tiny_run_prints_both_precisions_and_the_speed_up(capsys):
    bench.main(["--device", "cpu", "--steps", "3", "--warmup", "1", "--seeds", "2", "--processes", "2",
                "--modadd-steps", "1"])
    report = capsys.readouterr().out
    for row in ("naive float64", "batched float64, 2 seeds (eager)", "batched float32, 2 seeds (compiled, fused AdamW)",
                "batched float32, 2 processes x 2 seeds", "speed-up in seed-steps/s"):
        assert row in report, f"{row!r} missing from the report:\\n{report}"
    prefix = "batched float64, 2 seeds (seed 0) vs reference float64 after 4 steps: max |w difference| "
    [line] = [line for line in report.splitlines() if line.startswith(prefix)]
    if BITWISE:
        assert line.startswith(prefix + "0 "), line
    else:  # this BLAS rounds batched weight gradients differently (tests/test_batched.py)
        relative = float(re.search(r"\(([^ ]+) of max \|w\|\)", line).group(1))
        assert relative < 1e-12, line


def test_the_modadd_step_benchmark_takes_turns_and_counts_the_steps_matrix_products():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "modadd_step.py"
    spec = importlib.util.spec_from_file_location("modadd_step", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []
    steppers = {name: (lambda n, name=name: calls.append((name, n))) for name in ("fast", "lean")}
    seconds = module.time_blocks(steppers, block=3, rounds=2)
    assert calls == [("fast", 3), ("lean", 3), ("fast", 3), ("lean", 3)]
    assert {name: len(blocks) for name, blocks in seconds.items()} == {"fast": 2, "lean": 2}
    shapes = module.matmul_shapes(3831, 113)  # forward, input and weight gradient of four layers
    assert len(shapes) == 12 and (3831, 128, 512) in shapes and (512, 3831, 128) in shapes
    assert sum(2 * m * k * n for m, k, n in shapes) == pytest.approx(3.72e9, rel=1e-3)
    from grokutils.config import STEP_IMPLEMENTATIONS

    assert sorted(module.IMPLEMENTATIONS) == sorted(STEP_IMPLEMENTATIONS)  # the bench times every step there is
