"""grokutils.tools.bench: the command line checks its input, and a tiny run prints every row."""
from __future__ import annotations

import pytest

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
    assert "batched float64, 2 seeds (seed 0) vs reference float64 after 4 steps: max |w difference| 0 " in report
