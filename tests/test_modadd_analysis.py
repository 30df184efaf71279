"""grokutils.modadd_analysis: the values of the collapse search's sentences, and that every case renders."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from grokutils import modadd_analysis
from grokutils.config import ModAddConfig
from grokutils.prose import say

BAR = f"anti-grokking (fall >= {modadd_analysis.ANTI_GROKKING_DROP:g})"


def _log(*rows) -> pd.DataFrame:
    """A search log (`search_table`'s columns that the sentences read): the main run, then `rows` as
    (changed, peak test, final test, lowest train after the slip, verdict)."""
    main = ("(the main run)", 1.0, 1.0, "held", "no: falls 0.00 (< 0.2)")
    return pd.DataFrame([(changed, "50,000" if changed != main[0] else "1,200", peak, final, lowest, verdict)
                         for changed, peak, final, lowest, verdict in (main, *rows)],
                        columns=["changed", "steps", "peak test", "final test", "lowest train after the slip", BAR])


def test_search_status_names_the_deepest_fall_and_the_runs_past_the_bar():
    empty = modadd_analysis.search_status_values(_log())
    assert empty["n_runs"] == 0 and empty["found"] == [] and empty["deepest"] is None
    log = _log(("wd=0", 1.0, 0.9, "held", "no: falls 0.10 (< 0.2)"),
               ("lr=0.01", 1.0, 0.5, 0.4, "no: falls 0.50, but only 0.00 with train accuracy held"))
    values = modadd_analysis.search_status_values(log)
    assert values["n_runs"] == 2 and values["steps"] == ["50,000"] and values["found"] == []
    assert (values["deepest"], values["largest_fall"], values["deepest_lowest"]) == ("lr=0.01", 0.5, 0.4)
    assert abs(values["held_largest_fall"] - 0.1) < 1e-12
    held = modadd_analysis.search_status_values(log.iloc[:2])
    assert held["deepest"] == "wd=0" and held["deepest_lowest"] is None
    found = modadd_analysis.search_status_values(_log(("wd=0", 1.0, 0.7, "held", "yes: falls 0.30 with train ...")))
    assert found["found"] == ["wd=0"]
    for case in (empty, values, held, found):
        assert say("modadd_analysis.search_status", case)  # every case renders


def _run(dtype: str, fall_at: int, moving: bool = True) -> SimpleNamespace:
    """A one-seed search run whose weights' l2 norm falls to 0.01 at step `fall_at` (never if past 30)."""
    steps = [0, 10, 20, 30]
    norms = [30.0 + moving * step if step < fall_at else 0.01 for step in steps]
    curves = pd.DataFrame({"seed": 0, "step": steps, "l2_norm": norms, "train_loss": 1e-7,
                           "train_accuracy": 0.01, "test_accuracy": 0.01})
    return SimpleNamespace(config=ModAddConfig(steps=30, lr=0.01, dtype=dtype), curves=curves)


def test_collapse_values_name_the_collapse_and_what_its_float64_twin_did():
    log = _log(("lr=0.01", 1.0, 0.01, 0.01, "no"), ("lr=0.01, dtype=float64", 1.0, 0.01, 0.01, "no"))
    values = modadd_analysis.collapse_values(log, [_run("float32", 20), _run("float64", 30)])
    first, second = values["shrunk"]
    assert (first["changed"], first["step_before"], first["step"], first["norm"]) == ("lr=0.01", 10, 20, 0.01)
    assert second["changed"] == "lr=0.01, dtype=float64" and second["step"] == 30
    assert first["decay"] == 1 - 0.01 * ModAddConfig().weight_decay and first["shrink"] == first["decay"] ** 10
    assert values["twins"] == [{"changed": "lr=0.01", "twin": "lr=0.01, dtype=float64", "twin_final_test": 0.01,
                                "later": 10}]
    alone = modadd_analysis.collapse_values(log.iloc[:2], [_run("float32", 20)])
    assert alone["twins"] == [{"changed": "lr=0.01", "twin": None, "twin_final_test": None, "later": None}]
    held = modadd_analysis.collapse_values(log, [_run("float32", 20), _run("float64", 99)])
    assert held["twins"][0]["twin"] == "lr=0.01, dtype=float64" and held["twins"][0]["later"] is None
    none = modadd_analysis.collapse_values(log, [_run("float32", 99), _run("float64", 99)])
    assert none == {"shrunk": [], "twins": []}
    for case in (values, alone, held, none):  # every case renders
        assert say("modadd_analysis.shrunk", case)
        assert say("modadd_analysis.twins", case).endswith(".") or not case["twins"]
    assert say("modadd_analysis.twins", none) == ""


def test_frozen_values_name_the_runs_whose_weights_stopped_moving():
    log = _log(("wd=0", 1.0, 1.0, "held", "no"), ("lr=0.01", 1.0, 1.0, "held", "no"))
    values = modadd_analysis.frozen_values(log, [_run("float32", 99, moving=False), _run("float32", 99)])
    assert values == {"n_runs": 2, "threshold": modadd_analysis.FROZEN_CHANGE, "frozen": ["wd=0"]}
    moving = modadd_analysis.frozen_values(log.iloc[:2], [_run("float32", 99)])
    assert moving["frozen"] == []
    empty = modadd_analysis.frozen_values(log.iloc[:1], [])
    for case in (values, moving, empty):
        assert say("modadd_analysis.frozen", case)  # every case renders
