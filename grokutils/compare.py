"""Two stored MLP runs side by side, checkpoint by checkpoint.

    paired_curve(run_32, run_64, "test_accuracy")   # float32 against float64, seed by seed
    on_steps(run_1e6, run_2e5.curves.step.unique(), "test_accuracy")   # the long run where the short one looked
    length_pair(run_2e5, run_1e6, "test_accuracy")  # paired_curve of the two, at the short run's checkpoints
    paper_clock(steps, lr)                          # our steps on the papers' lr x steps clock
    clock_table(runs)                               # per seed: peak, falls and slip on that clock
    by_protocol(main, build)                        # runs named by protocol and weight decay

The runs compared here differ in one setting only (precision, or length), so seed s of one
starts from the same weights and sees the same batches as seed s of the other: the per-seed
difference is the effect of that setting on that trajectory, and its spread over seeds says
how much of it is noise. What the accelerated-protocol chapter says of them in words, the `*_values` functions return
as values and templates/compare.j2 words (`grokutils.prose.say`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from grokutils.store import RunResult

PAPER_LR = 5e-4  # both papers' AdamW learning rate (paper (a) Table 3)


def seed_table(run: RunResult, column: str, layer: str | None = None) -> pd.DataFrame:
    """One column of a run as steps x seeds (a layer's column when `layer` is given)."""
    frame = run.curves if layer is None else run.layers[run.layers.layer == layer]
    if column not in frame.columns:
        raise ValueError(f"column must be one of {sorted(frame.columns)}, got {column!r}")
    return frame.pivot(index="step", columns="seed", values=column).sort_index()


def paired_curve(run_a: RunResult, run_b: RunResult, column: str, layer: str | None = None) -> pd.DataFrame:
    """At the steps both runs measured: mean and sd over seeds of each, and of the per-seed difference a - b."""
    a, b = seed_table(run_a, column, layer), seed_table(run_b, column, layer)
    steps, seeds = a.index.intersection(b.index), a.columns.intersection(b.columns)
    if steps.empty or seeds.empty:
        raise ValueError(f"{run_a.path.name} and {run_b.path.name} share no measured step and seed")
    return _pair(a.loc[steps, seeds], b.loc[steps, seeds])


def length_pair(short: RunResult, long: RunResult, column: str) -> pd.DataFrame:
    """`paired_curve` of a short run against a longer one at the short run's checkpoints, the long
    run's seeds read there by `on_steps` (two lengths seldom share log-spaced checkpoints)."""
    a = seed_table(short, column)
    a = a[a.index <= seed_table(long, column).index.max()]
    b = on_steps(long, a.index, column)
    seeds = a.columns.intersection(b.columns)
    if seeds.empty:
        raise ValueError(f"{short.path.name} and {long.path.name} share no seed")
    return _pair(a[seeds], b.loc[a.index, seeds])


def _pair(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds of two steps x seeds tables and of their per-seed difference a - b."""
    difference = a - b
    return pd.DataFrame({"mean a": a.mean(axis=1), "sd a": a.std(axis=1), "mean b": b.mean(axis=1),
                         "sd b": b.std(axis=1), "difference": difference.mean(axis=1),
                         "sd of difference": difference.std(axis=1), "seeds": a.shape[1]})


def on_steps(run: RunResult, steps, column: str) -> pd.DataFrame:
    """Each seed's `column`, linearly interpolated in log(1 + step) at `steps` (within the run's range)."""
    table = seed_table(run, column)
    steps = np.asarray(sorted(steps), dtype=float)
    if steps.min() < table.index.min() or steps.max() > table.index.max():
        raise ValueError(f"steps must lie within {run.path.name}'s {table.index.min()}..{table.index.max()}, "
                         f"got {steps.min():g}..{steps.max():g}")
    grid, where = np.log1p(table.index.to_numpy(float)), np.log1p(steps)
    return pd.DataFrame({seed: np.interp(where, grid, table[seed].to_numpy(float)) for seed in table.columns},
                        index=pd.Index(steps.astype(np.int64), name="step"))


def paper_clock(steps, lr: float) -> np.ndarray:
    """Steps at the papers' learning rate with the same lr x steps as `steps` at `lr`."""
    if not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    return np.asarray(steps, dtype=float) * lr / PAPER_LR


def by_protocol(*groups: dict[float, RunResult]) -> dict[str, RunResult]:
    """Every distinct run of `groups` (each weight decay -> run), named '<protocol>, WD = <wd>'
    (`paper.protocol_name`), by weight decay and then in the order of the groups: the runs set side by
    side on the papers' clock. A run given twice appears once; two runs that would share a name are
    refused."""
    from grokutils.paper import protocol_name

    decays = set(groups[0])
    if any(set(group) != decays for group in groups):
        raise ValueError(f"every group must hold the same weight decays, got {[sorted(group) for group in groups]}")
    named = {}
    for wd in sorted(decays):
        for run in (group[wd] for group in groups):
            name = f"{protocol_name(run.config)}, WD = {wd:g}"
            if name in named and named[name].config != run.config:
                raise ValueError(f"two runs would both be named {name!r}: {named[name].path.name} and {run.path.name}")
            named.setdefault(name, run)
    return named


def clock_table(runs: dict[str, RunResult]) -> pd.DataFrame:
    """Per run and seed, on the papers' clock (`paper_clock`): where the smoothed test curve peaks, the
    fall with train held, where smoothed train accuracy slips (NaN: it never does) and the fall after
    it, beside the run's learning rate, steps and the clock at its end (`grokutils.phases`, per seed)."""
    from grokutils.claims import seed_phases

    rows = []
    for name, run in runs.items():
        lr = run.config.lr

        def clock(step):
            return np.nan if step is None else paper_clock(step, lr).item()

        for seed, phases in seed_phases(run).items():
            rows.append({"run": name, "seed": seed, "lr": lr, "steps": run.config.steps,
                         "clock at the end": clock(run.config.steps), "peak on the clock": clock(phases.t_peak),
                         "peak test accuracy": phases.peak_test_accuracy, "fall with train held": phases.held_fall,
                         "slip on the clock": clock(phases.t_slip), "fall after the slip": phases.further_fall,
                         "final test accuracy": phases.final_test_accuracy})
    return pd.DataFrame(rows).set_index(["run", "seed"])


def edge_table(runs: dict[str, RunResult], layers: tuple[str, ...] = ("fc1", "fc2")) -> pd.DataFrame:
    """One column per run: the seeds that anti-grok, the held and whole fall per seed, the lowest train
    accuracy after the fit slips, and test accuracy, alpha and traps at each phase edge of that run's own
    mean curves (`grokutils.phases`), mean ± sd over seeds."""
    from grokutils.claims import collapse_table
    from grokutils.paper import mean_sd
    from grokutils.phases import find_phases

    columns = {}
    for name, run in runs.items():
        seeds = collapse_table(run)
        lowest = seeds.lowest_train.min()
        column = {"seeds that anti-grok": f"{int(seeds.collapsed.sum())} of {len(seeds)}",
                  "fall with train held (smoothed)": mean_sd(seeds.held_fall, ".3f"),
                  "whole fall, smoothed peak to end": mean_sd(seeds.fall, ".3f"),
                  "lowest smoothed train accuracy after the slip": "held" if pd.isna(lowest) else f"{lowest:.3f}"}
        for phase, step in find_phases(run.curves).edge_steps().items():
            at = f"at the end of {phase}"
            if step is None:
                column[f"step {at}"] = "not reached"
                continue
            column[f"step {at}"] = f"{step:,}"
            column[f"test accuracy {at}"] = mean_sd(run.curves[run.curves.step == step].test_accuracy, ".3f")
            frame = run.layers[run.layers.step == step]
            for layer in layers:
                rows = frame[frame.layer == layer]
                column[f"{layer} alpha {at}"] = mean_sd(rows.alpha, ".2f")
                column[f"{layer} traps {at}"] = mean_sd(rows.traps, ".1f")
        columns[name] = column
    return pd.DataFrame(columns).fillna("-")  # a row another column has, for a phase this run did not reach


def fall_table(run_a: RunResult, run_b: RunResult) -> pd.DataFrame:
    """Per seed: each run's smoothed fall from its test peak to its end (`grokutils.phases`), its final
    test accuracy at the last checkpoint both measured, and the differences a - b."""
    from grokutils.phases import collapse_table

    falls = pd.DataFrame({"fall a": collapse_table(run_a.curves).fall, "fall b": collapse_table(run_b.curves).fall})
    test = paired_test_at_last_shared_step(run_a, run_b)
    table = falls.join(test, how="inner")
    table["fall difference"] = table["fall a"] - table["fall b"]
    return table


def paired_test_at_last_shared_step(run_a: RunResult, run_b: RunResult) -> pd.DataFrame:
    """Each seed's raw test accuracy in both runs at the last step both measured, and a - b."""
    a, b = seed_table(run_a, "test_accuracy"), seed_table(run_b, "test_accuracy")
    steps = a.index.intersection(b.index)
    if steps.empty:
        raise ValueError(f"{run_a.path.name} and {run_b.path.name} share no measured step")
    last = steps.max()
    table = pd.DataFrame({"test a": a.loc[last], "test b": b.loc[last]}).dropna()
    table["test difference"] = table["test a"] - table["test b"]
    table["step"] = int(last)
    table.index.name = "seed"
    return table


def first_divergence(run_a: RunResult, run_b: RunResult, column: str = "train_loss",
                     tolerance: float = 1e-6) -> pd.DataFrame:
    """Per seed, over the steps both runs measured exactly: the last shared step and the first one
    where `column` differs by more than `tolerance` relative to its size (<NA>: none does).

    Two runs of one seed that share their first steps (same weights, same batches) should agree
    there bit for bit; a divergence says the arithmetic is not reproducible across processes."""
    a, b = seed_table(run_a, column), seed_table(run_b, column)
    steps, seeds = a.index.intersection(b.index), a.columns.intersection(b.columns)
    if steps.empty or seeds.empty:
        raise ValueError(f"{run_a.path.name} and {run_b.path.name} share no measured step and seed")
    a, b = a.loc[steps, seeds], b.loc[steps, seeds]
    apart = (a - b).abs() > tolerance * np.maximum(1.0, a.abs())
    first = [int(apart.index[apart[seed]][0]) if apart[seed].any() else None for seed in seeds]
    return pd.DataFrame({"last shared step": int(steps.max()), "first step apart": pd.array(first, dtype="Int64")},
                        index=pd.Index(seeds, name="seed"))


def precision_values(falls: pd.DataFrame, held: int, level: float = 0.95) -> dict:
    """What the per-seed difference of two runs' falls shows (`fall_table`: 'fall a', 'fall b', 'fall
    difference'): its mean, a Student-t interval at `level` over the seeds (`low`, `high`), whether 0
    lies inside it, the largest difference it still allows and that as a share of run a's mean fall,
    the steps it covers (`steps`, None without a 'step' column) and `held`, the number of run-a seeds
    whose training fit held to the end (from `collapse_table`). In words: templates/compare.j2,
    `precision`."""
    from scipy import stats

    difference, n = falls["fall difference"].astype(float), len(falls)
    if n < 2:
        raise ValueError(f"precision_values needs at least 2 seeds, got {n}")
    mean, half = float(difference.mean()), float(stats.t.ppf(0.5 + level / 2, n - 1) * difference.std() / n**0.5)
    low, high = mean - half, mean + half
    largest = max(abs(low), abs(high))
    return {"mean": mean, "low": low, "high": high, "level": level, "n_seeds": n, "shows_none": low <= 0 <= high,
            "largest": largest, "share": largest / float(falls["fall a"].mean()),
            "steps": int(falls.step.iloc[0]) if "step" in falls else None, "held": held}


def divergence_values(apart: pd.DataFrame) -> dict:
    """Which seeds of two runs (`first_divergence`) agree at every step both measured (`same`), up to
    which step (`last_shared_step`), and from which step the others differ (`parted`, pairs of seed and
    step). In words: templates/compare.j2, `divergence`."""
    first = apart["first step apart"]
    return {"same": [int(seed) for seed, step in first.items() if pd.isna(step)],
            "parted": [(int(seed), int(step)) for seed, step in first.items() if pd.notna(step)],
            "last_shared_step": int(apart["last shared step"].iloc[0])}


def protocols_on_clock_values(on_clock: dict[str, RunResult], accelerated: dict[float, RunResult]) -> dict:
    """The runs of `by_protocol` side by side, per weight decay and protocol (`rows`, accelerated first):
    the mean ± sd over seeds of the peak on the papers' clock, the fall with train held and the
    final test accuracy, how many seeds slip and the range of their slips on the clock, the run's
    end on the clock. `other`: the build's protocol where it is not the accelerated one, else None.
    In words: templates/compare.j2, `protocols_on_clock`."""
    from grokutils.paper import mean_sd, protocol_name

    table = clock_table(on_clock)
    accelerated_name = protocol_name(next(iter(accelerated.values())).config)
    rows = []
    for name, run in on_clock.items():
        seeds = table.loc[name]
        slips = seeds["slip on the clock"].dropna()
        rows.append({"protocol": protocol_name(run.config), "wd": run.config.weight_decay,
                     "end": float(seeds["clock at the end"].iloc[0]),
                     "peak": mean_sd(seeds["peak on the clock"], ",.0f")  # None: no seed peaks
                     if seeds["peak on the clock"].notna().any() else None,
                     "held_fall": mean_sd(seeds["fall with train held"], ".3f"),
                     "final": mean_sd(seeds["final test accuracy"], ".3f"), "n_seeds": len(seeds),
                     "n_slipped": len(slips), "slips": [float(value) for value in sorted(slips)]})
    others = [row["protocol"] for row in rows if row["protocol"] != accelerated_name]
    return {"accelerated": accelerated_name, "other": others[0] if others else None, "rows": rows}


def three_phase_values(points: pd.DataFrame) -> dict:
    """Which float32 points of a learning-rate sweep (`sweep.point_table`) reach all three phases
    (`lrs`: those with a `t_collapse`), how many fit their training set (`n_fitting`), and among those
    the deepest fall from the peak with its learning rate, against the phase rule's bar. In words:
    templates/compare.j2, `three_phase`."""
    from grokutils.phases import COLLAPSE_DROP

    float32 = [(lr, row) for (lr, dtype, _), row in points.iterrows() if dtype == "float32"]
    fitting = [(row["fall from peak"], lr) for lr, row in float32 if pd.notna(row.t_fit)]
    deepest_fall, deepest_lr = max(fitting, default=(None, None))
    return {"lrs": [lr for lr, row in float32 if pd.notna(row.t_collapse)], "n_fitting": len(fitting),
            "deepest_fall": deepest_fall, "deepest_lr": deepest_lr, "bar": COLLAPSE_DROP}
