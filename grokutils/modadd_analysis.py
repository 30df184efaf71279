"""The modular-addition chapter's numbers, from finished runs: the tables of paper (b) Appendix H
(Tables 5-11), the collapse search's log and verdicts, and the weight-collapse detection; the values
of the chapter's sentences about the search, which templates/modadd_analysis.j2 puts in words.
`grokutils.plots.modadd` draws the figures from the same values."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from grokutils import paper, transformer
from grokutils.config import ModAddConfig
from grokutils.paper import mean_sd
from grokutils.phases import HIGH_TRAIN, Phases, find_phases
from grokutils.store import RunResult


def _at(frame: pd.DataFrame, step: int | None) -> pd.DataFrame:
    """Rows of checkpoint `step` (none if `step` is None)."""
    return frame.iloc[:0] if step is None else frame[frame.step == step]


def accuracy_table(result: RunResult, phases: Phases) -> pd.DataFrame:
    """Table 5: train and test accuracy at each phase's edge (mean ± sd over seeds), paper beside."""
    rows = []
    for phase, step in phases.edge_steps().items():
        mine = _at(result.curves, step)
        rows.append({"phase": phase, "step": "not reached" if step is None else f"{step:,}",
                     "train (ours)": mean_sd(mine.train_accuracy, ".3f"),
                     "test (ours)": mean_sd(mine.test_accuracy, ".3f"),
                     "train (paper)": paper.format_value(*paper.MODADD_TABLE5_ACCURACY["train"][phase]),
                     "test (paper)": paper.format_value(*paper.MODADD_TABLE5_ACCURACY["test"][phase])})
    return pd.DataFrame(rows).set_index("phase")


def layer_phase_table(result: RunResult, phases: Phases, column: str, paper_values: dict,
                      digits: int = 2) -> pd.DataFrame:
    """Tables 6 and 7: `column` per layer at each phase edge (ours: mean ± sd over seeds), paper beside.

    The last row is the mean over the eight layers ± its sd across layers, as in the paper.
    """
    table = {}
    for phase, step in phases.edge_steps().items():
        mine = _at(result.layers, step).astype({column: float})
        by_layer = mine.groupby("layer")[column]
        ours = {layer: mean_sd(by_layer.get_group(layer), f".{digits}f") if layer in by_layer.groups else "not reached"
                for layer in transformer.ANALYZED}
        layer_means = by_layer.mean().reindex(list(transformer.ANALYZED))
        ours["mean"] = mean_sd(layer_means.values, f".{digits}f") if len(mine) else "not reached"
        table[(phase, "ours")] = ours
        table[(phase, "paper")] = {layer: paper.format_value(*paper_values[layer][phase])
                                   for layer in (*transformer.ANALYZED, "mean")}
    frame = pd.DataFrame(table)
    frame.index.name = "layer"
    return frame


def _fourier_arrays(result: RunResult, seed: int, step: int, what: str) -> dict[str, np.ndarray]:
    """One Fourier readout of every head at a checkpoint: {'keys.h0': array, ...}."""
    heads = [f"keys.h{h}" for h in range(transformer.N_HEADS)]
    return {head: result.array(seed, step, head, what).astype(float) for head in heads}


def _top_indices(values: np.ndarray, k: int) -> str:
    """The indices of the k largest values, largest first, as text."""
    return ", ".join(str(i) for i in np.argsort(values)[::-1][:k])


def key_gram_table(result: RunResult, phases: Phases, seed: int = 0, top: int = 5) -> pd.DataFrame:
    """Table 9: per head and phase, lambda_max of the key Gram W_K,h^T W_K,h (mean ± sd over
    seeds) and the preferred tokens of `seed`: largest |projection| of their embedding on the
    Gram's top eigenvector, and largest '=' query scores in slot a."""
    rows = []
    for phase, step in phases.edge_steps().items():
        if step is None:
            rows.append({"phase": phase, "head": "all", "step": "not reached"})
            continue
        mine = _at(result.curves, step)
        projection = _fourier_arrays(result, seed, step, "projection")
        preference = _fourier_arrays(result, seed, step, "preference")
        for h in range(transformer.N_HEADS):
            rows.append({"phase": phase, "head": h, "step": f"{step:,}",
                         "lambda_max (ours)": mean_sd(mine[f"key_gram_lambda_max_h{h}"]),
                         "lambda_max (paper)": paper.MODADD_TABLE9_KEY_GRAM_LAMBDA_MAX[phase],
                         f"top {top} tokens on the key direction": _top_indices(np.abs(projection[f"keys.h{h}"]), top),
                         f"top {top} attended tokens": _top_indices(preference[f"keys.h{h}"], top)})
    return pd.DataFrame(rows).fillna("").set_index(["phase", "head"])


def dft_energies(result: RunResult, seed: int, step: int) -> dict[str, np.ndarray]:
    """Token-DFT energy fractions of embed, unembed and the keys (mean over heads) at a checkpoint."""
    keys = np.mean(list(_fourier_arrays(result, seed, step, "dft").values()), axis=0)
    return {"embed": result.array(seed, step, "embed", "dft").astype(float),
            "unembed": result.array(seed, step, "unembed", "dft").astype(float), "keys (mean over heads)": keys}


def dft_table(result: RunResult, phases: Phases, seed: int = 0, top: int = 6) -> pd.DataFrame:
    """Table 10: peak energy fraction (frequency 0 left out), the top frequencies, and the share
    of the paper's six frequencies, per matrix and phase, for `seed`."""
    rows = []
    for phase, step in phases.edge_steps().items():
        if step is None:
            rows.append({"phase": phase, "matrix": "all", "step": "not reached"})
            continue
        for matrix, energy in dft_energies(result, seed, step).items():
            paper_set = [k for k in paper.MODADD_TABLE10_FREQUENCIES if k < len(energy)]  # all, for p = 113
            rows.append({"phase": phase, "matrix": matrix, "step": f"{step:,}",
                         "peak energy (ours)": round(float(energy[1:].max()), 4),
                         "peak energy (paper)": paper.MODADD_TABLE10_PEAK_ENERGY[phase],
                         f"top {top} frequencies": _top_indices(np.r_[0.0, energy[1:]], top),
                         "share of the paper's frequencies": round(float(energy[paper_set].sum()), 4)})
    return pd.DataFrame(rows).fillna("").set_index(["phase", "matrix"])


def kernel_table(result: RunResult, phases: Phases, seed: int = 0, top: int = 3) -> pd.DataFrame:
    """Table 11: the rule kernel k(Delta) on test (and train) pairs, its contrast and spectrum, per phase."""
    rows = []
    for phase, step in phases.edge_steps().items():
        if step is None:
            rows.append({"phase": phase, "step": "not reached"})
            continue
        kernel = {split: result.array(seed, step, "logits", f"kernel_{split}").astype(float)
                  for split in ("test", "train")}
        spectrum = transformer.kernel_spectrum(kernel["test"])
        order = np.argsort(np.r_[0.0, spectrum[1:]])[::-1][:top]
        rows.append({"phase": phase, "step": f"{step:,}", "k(0), test": round(float(kernel["test"][0]), 3),
                     "max k(Delta != 0), test": round(float(kernel["test"][1:].max()), 3),
                     "argmax Delta, test": int(np.argmax(kernel["test"])),
                     "k(0), train": round(float(kernel["train"][0]), 3),
                     f"top {top} kernel frequencies": ", ".join(str(k) for k in order),
                     "their power share": round(float(spectrum[order].sum()), 3)})
    return pd.DataFrame(rows).fillna("").set_index("phase")


ANTI_GROKKING_DROP = 0.2  # the search's bar (issue 24): smoothed test accuracy ends this far below its peak


def search_verdict(phases: Phases) -> str:
    """Whether one search run anti-groks by the search's bar: its held fall (`grokutils.phases`: smoothed
    test accuracy lost from the peak while smoothed train accuracy stays at or above HIGH_TRAIN) is at
    least ANTI_GROKKING_DROP; else why not."""
    if phases.t_fit is None:
        return "no: never fits the training set"
    if phases.held_fall >= ANTI_GROKKING_DROP:
        return f"yes: falls {phases.held_fall:.2f} with train accuracy held"
    if phases.fall >= ANTI_GROKKING_DROP:
        return f"no: falls {phases.fall:.2f}, but only {phases.held_fall:.2f} with train accuracy held"
    return f"no: falls {phases.fall:.2f} (< {ANTI_GROKKING_DROP:g})"


def changed_settings(base: ModAddConfig, config: ModAddConfig) -> str:
    """What a search run changes from the main config `base`, besides its length and step (the
    steps, checkpoints and step implementation of every search run); `init_from` by its hash."""
    changed = {name: value for name, value in dataclasses.asdict(config).items()
               if value != getattr(base, name) and name not in ("n_seeds", "steps", "n_checkpoints", "step_impl")}
    if "init_from" in changed:
        changed["init_from"] = changed["init_from"].split("-")[-1]  # the hash and which weights
    unchanged = "(the main run)" if config == base else "(the main run's settings)"
    return ", ".join(f"{k}={v}" for k, v in changed.items()) or unchanged


def search_table(base: ModAddConfig, runs: list[RunResult]) -> pd.DataFrame:
    """The log of the collapse search, one row per run: what it changed from `base`, its steps, the
    smoothed peak and final test accuracy (`grokutils.phases`), the lowest smoothed train accuracy of
    any seed once its fit slips ('held' if it never does), whether it anti-groks by the phase rule (a held
    fall of 0.05), the search's own bar (`search_verdict`), and the mean traps and alpha of the analyzed
    matrices at the last step."""
    from grokutils.phases import COLLAPSE_DROP, collapse_table

    rows = []
    for result in runs:
        found, lowest = find_phases(result.curves), collapse_table(result.curves).lowest_train.min()
        final = result.layers[result.layers.step == result.layers.step.max()]
        rows.append({"changed": changed_settings(base, result.config),
                     "steps": f"{result.config.steps:,}", "peak test": round(found.peak_test_accuracy, 3),
                     "step of peak": "-" if found.t_peak is None else f"{found.t_peak:,}",
                     "final test": round(found.final_test_accuracy, 3),
                     "lowest train after the slip": "held" if pd.isna(lowest) else round(float(lowest), 3),
                     f"anti-groks (held fall >= {COLLAPSE_DROP:g})": "yes" if found.collapsed else "no",
                     f"anti-grokking (fall >= {ANTI_GROKKING_DROP:g})": search_verdict(found),
                     "traps at end": round(float(final.traps.astype(float).mean()), 2),
                     "alpha at end": round(float(final.alpha.astype(float).mean()), 3)})
    return pd.DataFrame(rows)


def search_status_values(log: pd.DataFrame) -> dict:
    """What the collapse search found, from its log (`search_table` of the main run and the search runs, in
    that order), for templates/modadd_analysis.j2 `search_status`: the number of search runs and their
    lengths (`n_runs`, `steps`), the search's bar (`drop`, `held_train`), the runs that pass it (`found`),
    the largest smoothed fall and the run it happened in (`largest_fall`, `deepest`), that run's lowest
    train accuracy after the slip (`deepest_lowest`, None if it held) and the largest fall of a run whose
    train accuracy held (`held_largest_fall`, None if none held)."""
    searched = log.iloc[1:]  # the main run is the first row
    fall = searched["peak test"] - searched["final test"]
    lowest = searched["lowest train after the slip"]
    held = lowest.astype(str) == "held"
    passed = searched[f"anti-grokking (fall >= {ANTI_GROKKING_DROP:g})"].str.startswith("yes")
    deepest = fall.idxmax() if len(searched) else None
    return {"n_runs": len(searched), "steps": sorted(set(searched.steps)), "drop": ANTI_GROKKING_DROP,
            "held_train": HIGH_TRAIN, "found": list(searched.changed[passed]),
            "largest_fall": None if deepest is None else float(fall[deepest]),
            "deepest": None if deepest is None else searched.changed[deepest],
            "deepest_lowest": None if deepest is None or held[deepest] else float(lowest[deepest]),
            "held_largest_fall": float(fall[held].max()) if held.any() else None}


def late_l2_change(result: RunResult, decades: float = 0.5) -> float:
    """Relative change of the weights' l2 norm over the run's last `decades` of steps (from the
    checkpoint nearest last step / 10**decades to the last one), mean over seeds: near 0 when training
    has stopped moving the weights, as it does once a float32 loss underflows to exactly 0."""
    curves = result.curves.sort_values("step")
    last = int(curves.step.max())
    steps = curves.step.unique()
    start = int(steps[np.abs(np.log1p(steps) - np.log1p(last / 10 ** decades)).argmin()])
    norms = curves[curves.step.isin([start, last])].pivot(index="seed", columns="step", values="l2_norm")
    return float(((norms[last] - norms[start]).abs() / norms[last]).mean())


FROZEN_CHANGE = 1e-3  # a run whose weights' l2 norm changes less than this over its last half-decade has stopped


def frozen_values(log: pd.DataFrame, search_runs: list[RunResult]) -> dict:
    """The search runs that training has stopped moving (`late_l2_change` over the last half-decade below
    FROZEN_CHANGE), by what they changed (`log` as for `collapse_values`), for templates/modadd_analysis.j2
    `frozen`: {n_runs, frozen, threshold}."""
    return {"n_runs": len(search_runs), "threshold": FROZEN_CHANGE,
            "frozen": [row.changed for (_, row), run in zip(log.iloc[1:].iterrows(), search_runs)
                       if late_l2_change(run) < FROZEN_CHANGE]}


def weight_collapse(result: RunResult, fraction: float = 0.01) -> dict | None:
    """Where the weights' l2 norm (mean over seeds) first falls below `fraction` of its largest
    value so far: the checkpoint before and the one at the fall, with the train loss and
    accuracy before it and the test accuracy after; None if it never does. A model whose loss has
    stopped giving gradients is shrunk towards zero by weight decay alone."""
    curves = result.curves.groupby("step")[["l2_norm", "train_loss", "train_accuracy", "test_accuracy"]].mean()
    fallen = curves.l2_norm < fraction * curves.l2_norm.cummax()
    if not fallen.any():
        return None
    at = curves.index[fallen.argmax()]
    before = curves.index[curves.index.get_loc(at) - 1]
    return {"step_before": int(before), "step": int(at), "norm_before": float(curves.l2_norm[before]),
            "norm": float(curves.l2_norm[at]), "train_loss_before": float(curves.train_loss[before]),
            "train_accuracy_after": float(curves.train_accuracy.iloc[-1]),
            "test_accuracy_after": float(curves.test_accuracy.iloc[-1])}


def collapse_values(log: pd.DataFrame, search_runs: list[RunResult]) -> dict:
    """The search runs whose weights collapsed (`weight_collapse`) and, for each float32 one, what its
    float64 twin (same config but dtype) did, if the search holds one; `log` is `search_table` of the main
    run and `search_runs`, in that order. For templates/modadd_analysis.j2 `shrunk` and `twins`:

    - shrunk: one dict per collapsed run, `weight_collapse`'s values with `changed`, `decay` (weight
      decay's factor per step), `shrink` (that factor over the steps of the fall) and `chance` (1 / p);
    - twins: one dict per collapsed float32 run, with `changed`, `twin` (what its float64 twin changed,
      None if the search has none), `twin_final_test` and `later` (steps from its collapse to the
      twin's, None if the twin's weights never collapse)."""
    rows = [row for _, row in log.iloc[1:].iterrows()]
    shrunk, twins = [], []
    for row, run in zip(rows, search_runs):
        if (found := weight_collapse(run)) is None:
            continue
        decay = 1 - run.config.lr * run.config.weight_decay
        shrunk.append({**found, "changed": row.changed, "decay": decay, "chance": 1 / run.config.p,
                       "shrink": decay ** (found["step"] - found["step_before"])})
        if run.config.dtype == "float64":
            continue
        twin_row, twin = next(((twin_row, twin) for twin_row, twin in zip(rows, search_runs)
                               if twin.config.dtype == "float64"
                               and dataclasses.replace(twin.config, dtype=run.config.dtype) == run.config),
                              (None, None))
        twin_found = None if twin is None else weight_collapse(twin)
        twins.append({"changed": row.changed, "twin": None if twin is None else twin_row.changed,
                      "twin_final_test": None if twin is None else twin_row["final test"],
                      "later": None if twin_found is None else twin_found["step"] - found["step"]})
    return {"shrunk": shrunk, "twins": twins}
