"""The tidy log of HTSR alarms shared by `grokutils.tools.monitor` and `grokutils.tools.watch`.

One row per analyzed (step, layer), `LOG_COLUMNS` first and the analyzer's other columns
after them. A row alarms when its alpha is below `ALPHA_LINE` (2), or, only when
`max_traps` is given, when it has more than `max_traps` correlation traps (by default traps
are logged but raise no alarm: `grokutils.alarm_eval` found trap counts alarming on every
stored seed, collapsing or not); a failed fit (alpha NaN) raises no alpha alarm. A layer
whose weights hold NaN or Inf is not analyzed: its row (column `nonfinite` True, present in
a log once any layer had such weights) always alarms. The log
is written atomically as CSV or Parquet (`LOG_SUFFIXES`) and read back as written.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from grokutils.htsr import ALPHA_LINE
from grokutils.store import atomic_write_table

LOG_SUFFIXES = (".csv", ".parquet")
# The first columns of the log, in this order; the analyzer's other columns follow.
LOG_COLUMNS = ["step", "layer", "rows", "cols", "alpha", "traps", "alarm", "reason", "error"]
NONFINITE_REASON = "non-finite weights (NaN or Inf)"


def alarm_reasons(frame: pd.DataFrame, alpha_threshold: float = ALPHA_LINE,
                  max_traps: int | None = None) -> pd.Series:
    """Per row, why it alarms ('alpha 1.83 < 2', '3 traps', both joined by '; '; or
    NONFINITE_REASON) or ''."""
    alpha = pd.to_numeric(frame["alpha"], errors="coerce")
    traps = pd.to_numeric(frame["traps"], errors="coerce")
    low_alpha = (alpha < alpha_threshold).fillna(False)
    trapped = (traps > max_traps).fillna(False) if max_traps is not None else [False] * len(frame)
    nonfinite = frame["nonfinite"].fillna(False).astype(bool) if "nonfinite" in frame else [False] * len(frame)
    reasons = []
    for a, t, is_low, is_trapped, is_nonfinite in zip(alpha, traps, low_alpha, trapped, nonfinite):
        parts = ([NONFINITE_REASON] if is_nonfinite else []) + \
                ([f"alpha {a:.2f} < {alpha_threshold:g}"] if is_low else []) + \
                ([f"{int(t)} trap{'s' if t != 1 else ''}"] if is_trapped else [])
        reasons.append("; ".join(parts))
    return pd.Series(reasons, index=frame.index, dtype=object)


def error_rows(step: int, matrices: dict[str, np.ndarray], error: str) -> pd.DataFrame:
    """Log rows recording that the analysis of one snapshot failed."""
    return pd.DataFrame({"step": step, "layer": list(matrices),
                         "rows": [m.shape[0] for m in matrices.values()],
                         "cols": [m.shape[1] for m in matrices.values()],
                         "alpha": np.nan, "traps": pd.array([pd.NA] * len(matrices), dtype="Int64"),
                         "error": error})


def nonfinite_rows(step: int, matrices: dict[str, np.ndarray]) -> pd.DataFrame:
    """Log rows of layers whose weights hold NaN or Inf: not analyzed, always an alarm."""
    return error_rows(step, matrices, "").assign(nonfinite=True)


def tidy_log(frames: Iterable[pd.DataFrame], alpha_threshold: float = ALPHA_LINE,
             max_traps: int | None = None) -> pd.DataFrame:
    """One row per (step, layer), LOG_COLUMNS first, with the alarm flag and its reason."""
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return pd.DataFrame({column: [] for column in LOG_COLUMNS})
    table = pd.concat(frames, ignore_index=True)
    table["traps"] = pd.to_numeric(table["traps"], errors="coerce").astype("Int64")
    table["error"] = table["error"].fillna("") if "error" in table else ""
    if "nonfinite" in table:
        table["nonfinite"] = table["nonfinite"].fillna(False).astype(bool)
    table["reason"] = alarm_reasons(table, alpha_threshold, max_traps)
    table["alarm"] = table["reason"] != ""
    others = [column for column in table.columns if column not in LOG_COLUMNS]
    return table[LOG_COLUMNS + others].sort_values(["step"], kind="stable").reset_index(drop=True)


def write_log(table: pd.DataFrame, path: Path) -> None:
    """Write the log as CSV or Parquet (by suffix), atomically (`store.atomic_write_table`)."""
    atomic_write_table(table, Path(path))


def read_log(path: Path | str) -> pd.DataFrame:
    """A monitor log written by `write_log` (CSV or Parquet)."""
    path = Path(path)
    if path.suffix not in LOG_SUFFIXES:
        raise ValueError(f"log must end in one of {LOG_SUFFIXES}, got {path.name!r}")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    text_columns = ("layer", "reason", "error")  # read as written: '' stays '', a layer 'NA' stays 'NA'
    numeric = [column for column in pd.read_csv(path, nrows=0).columns if column not in text_columns]
    table = pd.read_csv(path, dtype={column: str for column in text_columns}, keep_default_na=False,
                        na_values={column: [""] for column in numeric})
    table["traps"] = table["traps"].astype("Int64")
    return table
