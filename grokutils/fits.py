"""How far each HTSR alpha can be trusted: the size of its fitted tail, and a sensitivity check.

WeightWatcher fits a power law to the eigenvalues of X = W^T W / N at or above `xmin`, the
value chosen by the smallest KS distance (Clauset et al.). Nothing stops that search from
putting `xmin` inside the bulk, and then "alpha" describes most of the spectrum, not its
tail. Two diagnostics, both from the stored runs (nothing is re-measured):

* `with_fit_diagnostics(layers)`: `tail_size` = num_pl_spikes / num_evals (the share of the
  spectrum in the fitted tail) and `wide_tail` = tail_size > `WIDE_TAIL` (half): a fit over
  more than half of the spectrum is flagged, and so is any verdict that rests on it.
* `fixed_tail_alpha(result)`: the sensitivity check a referee would ask for. Alpha refitted
  from the stored eigenvalues by the same maximum-likelihood estimator, but over a *fixed*
  top fraction of each spectrum (`TOP_FRACTIONS`: the largest 10% and 25%), so that xmin
  cannot wander into the bulk: alpha = 1 + k / sum_i log(lambda_i / lambda_(k)) over the
  k largest eigenvalues (Hill's estimator). WeightWatcher's own fit also clips at `xmax`
  (the authors' `fix_fingers='clip_xmax'`); this one does not.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from grokutils.htsr import ALPHA_LINE
from grokutils.store import RunResult

WIDE_TAIL = 0.5  # a fit whose tail holds more than this share of the eigenvalues is flagged
TOP_FRACTIONS = (0.10, 0.25)  # the fixed tails of the sensitivity check


def with_fit_diagnostics(layers: pd.DataFrame) -> pd.DataFrame:
    """The layers table with `tail_size` (fitted tail / all eigenvalues) and `wide_tail` (> WIDE_TAIL)."""
    missing = {"num_pl_spikes", "num_evals"} - set(layers.columns)
    if missing:
        raise ValueError(f"layers table lacks columns {sorted(missing)}; has {list(layers.columns)}")
    tail = layers.num_pl_spikes.astype(float) / layers.num_evals.astype(float).where(layers.num_evals > 0)
    return layers.assign(tail_size=tail, wide_tail=(tail > WIDE_TAIL).fillna(False))


def hill_alpha(evals: np.ndarray, fraction: float) -> float:
    """Power-law alpha (MLE, xmin at the k-th largest eigenvalue) of the top `fraction` of `evals`."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    positive = np.sort(np.asarray(evals, dtype=float))[::-1]
    positive = positive[positive > 0]
    k = int(np.ceil(fraction * len(positive)))
    if k < 2:
        return float("nan")
    logs = np.log(positive[:k] / positive[k - 1])
    return float(1 + k / logs.sum()) if logs.sum() > 0 else float("nan")


def fixed_tail_alpha(result: RunResult, layers=("fc1", "fc2"), fractions=TOP_FRACTIONS) -> pd.DataFrame:
    """Per (seed, step, layer): WeightWatcher's alpha, its tail size and xmin, and alpha of each fixed top fraction."""
    frame = with_fit_diagnostics(result.layers)
    frame = frame[frame.layer.isin(layers)].sort_values(["seed", "step", "layer"])
    rows = []
    with np.load(result.path / "arrays.npz") as arrays:
        for row in frame.itertuples():
            evals = arrays[f"seed{row.seed}/step{row.step}/{row.layer}/evals"]
            rows.append({f"alpha_top{round(100 * f)}": hill_alpha(evals, f) for f in fractions})
    extra = pd.DataFrame(rows, index=frame.index)
    return pd.concat([frame[["seed", "step", "layer", "alpha", "xmin", "num_pl_spikes", "num_evals", "tail_size",
                             "wide_tail"]], extra], axis=1).reset_index(drop=True)


def first_step_below(frame: pd.DataFrame, column: str, line: float = ALPHA_LINE) -> int | None:
    """First checkpoint from which `column` stays below `line` to the end (NaN counts as above)."""
    ordered = frame.sort_values("step")
    values = ordered[column].astype(float)
    above = ordered.step[(values >= line) | values.isna()]
    later = ordered.step[ordered.step > (above.max() if len(above) else -1)]
    return int(later.iloc[0]) if len(later) else None


def sensitivity_table(fits: pd.DataFrame, edges: dict[int, dict[str, int | None]]) -> pd.DataFrame:
    """Per seed and layer: each alpha at the run's last step and the grokking edge, whether it ends
    below 2, and the tail size behind WeightWatcher's value (`edges`: seed -> phase -> step)."""
    alphas = ["alpha"] + [column for column in fits.columns if column.startswith("alpha_top")]
    rows = []
    for (seed, layer), mine in fits.groupby(["seed", "layer"]):
        mine = mine.set_index("step").sort_index()
        peak = edges.get(seed, {}).get("grokking")
        row = {"seed": seed, "layer": layer, "tail_size_at_end": float(mine.tail_size.iloc[-1]),
               "wide_tail_at_end": bool(mine.wide_tail.iloc[-1])}
        for column in alphas:
            row[f"{column}_at_peak"] = float(mine[column].get(peak, np.nan)) if peak is not None else np.nan
            row[f"{column}_at_end"] = float(mine[column].iloc[-1])
            row[f"{column}_ends_below_2"] = bool(mine[column].iloc[-1] < ALPHA_LINE)
        rows.append(row)
    return pd.DataFrame(rows).set_index(["seed", "layer"])
