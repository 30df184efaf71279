"""The values each chapter's text quotes: one function per chapter, each returning a dict.

A chapter glues exactly one dict, near its end:

    glue_all(glued.data_values(mnist, modadd))

The function is named after the notebook, without its number (`00_data` → `data_values`), and
takes the objects the chapter has already computed (runs, tables), so nothing is computed twice.
Its values are numbers formatted as the text shows them, or sentences rendered from
`grokutils/templates` (`grokutils.prose.say`) from values that the analysis modules return and
tests check. `tests/test_notebooks.py::test_a_chapter_glues_the_dict_of_its_one_function` checks
that every chapter glues this way and no other.
"""
from __future__ import annotations

# Imports are inside the functions: each chapter's function loads only what its chapter uses.


def data_values(mnist, modadd) -> dict[str, object]:
    """The data: the sizes of the MNIST subset and of the modular-addition training split."""
    return {"n_train": len(mnist.train_y), "n_test": len(mnist.test_y), "modadd_n_train": len(modadd.train_idx)}


def _protocol(config) -> dict[str, object]:
    """The sentences on the run's protocol that an MLP chapter states at its top: how it differs from
    the papers' (`paper.protocol_note`) and what the build reads, and why (`paper.protocol_context_values`)."""
    from grokutils import paper, prose

    return {"protocol": paper.protocol_note(config),
            "protocol_context": prose.say("paper.context", paper.protocol_context_values(config))}


def _reached(result, phases) -> dict[str, object]:
    """The stretches a run reached and its per-seed verdict by the phase rule."""
    from grokutils import claims

    return {"phases_reached": ", ".join(phases.spans()),
            "verdict": claims.verdict_words(claims.collapse_table(result))}


def mlp_grokking_values(config, shared, phases, turns) -> dict[str, object]:
    """The MLP without weight decay: its protocol, the numbers several chapters state (`shared`, the
    chapter's `claims.shared_claims(result, control)`), the stretches it reached and the progress
    measures whose trend turns at the peak (`turns`, `claims.measure_turn_table`)."""
    from grokutils import claims
    from grokutils.plots.mlp import PROGRESS_MEASURES

    return {**_protocol(config), **shared.to_dict(), "phases_reached": ", ".join(phases.spans()),
            "turning_measures": claims.turning_words(turns, PROGRESS_MEASURES)}


def wd_control_values(config, baseline, result, comparison) -> dict[str, object]:
    """The weight-decay control (`result`) beside its WD = 0 `baseline`: the control's protocol, the
    numbers several chapters state, and the change of the smoothed final test accuracy that weight decay
    makes (`comparison`, `plots.mlp.comparison_table` of the baseline and the control, in that order)."""
    from grokutils import claims

    final_gap = comparison.loc["final test accuracy, smoothed"].diff().iloc[-1]
    return {**_protocol(config), **claims.shared_claims(baseline, result).to_dict(), "final_gap": f"{final_gap:+.3f}"}


def modular_addition_values(config, phases, log, search_runs) -> dict[str, object]:
    """The modular-addition transformer: the main run's phases, accuracy, length and learning rate, and
    what the collapse search found (`log`, `modadd_analysis.search_table` of the main run and `search_runs`)."""
    from grokutils import modadd_analysis as analysis
    from grokutils.phases import rule_text
    from grokutils.prose import say

    collapse = analysis.collapse_values(log, search_runs)
    return {"ma_phase_rule": rule_text(), "ma_phases": ", ".join(phases.spans()),
            "ma_peak_test": f"{phases.peak_test_accuracy:.3f}", "ma_final_test": f"{phases.final_test_accuracy:.3f}",
            "ma_steps": f"{config.steps:,}", "ma_lr": f"{config.lr:g}",
            "ma_search_status": say("modadd_analysis.search_status", analysis.search_status_values(log)),
            "ma_frozen_words": say("modadd_analysis.frozen", analysis.frozen_values(log, search_runs)),
            "ma_shrunk_words": say("modadd_analysis.shrunk", collapse),
            "ma_shrunk_twin_words": say("modadd_analysis.twins", collapse)}


def correlation_traps_values(config, result, phases, refit, draws, n_draws, crossing) -> dict[str, object]:
    """Correlation traps: the run's protocol, phases and verdict, the refitted spectra (`refit`,
    `traps.refit_run`) with FC1's traps and KS statistic at the start and end beside the paper's, and the
    checks of the detector: false positives in `n_draws` Gaussian matrices per shape (`draws`) and the
    predicted detection strength (`crossing`, by shape)."""
    from grokutils import paper

    fc1 = refit[refit.layer == "fc1"]
    fc1_start, fc1_end = fc1[fc1.step == refit.step.min()], fc1[fc1.step == refit.step.max()]
    ks = {phase: f"{paper.TABLE4_KS[phase]['ks']:g}" for phase in paper.PHASES}
    return {**_protocol(config), **_reached(result, phases),
            "phases_missing": ", ".join(name for name in paper.PHASES if name not in phases.spans()) or "none",
            "max_ratio": f"{refit.max_over_threshold.max():.3f}", "n_fits": f"{len(refit):,}",
            "wd_used": f"{config.weight_decay:g}", "fp_draws": f"{n_draws:,}",
            "fp_found": str(int(sum((frame.traps > 0).sum() for frame in draws.values()))),
            "crossing_fc1": f"{crossing['200 x 784']:.2f}",
            "fc1_end_traps": f"{fc1_end.traps_weightwatcher.min()} to {fc1_end.traps_weightwatcher.max()}",
            "fc1_ks_start": f"{fc1_start.ks.mean():.3f}", "fc1_ks_end": f"{fc1_end.ks.mean():.3f}",
            "paper_ks": ks["anti-grokking"],
            "paper_ks_before": f"{ks['pre-grokking']} in pre-grokking and {ks['grokking']} at grokking"}


def prototypes_values(config, result, phases, top_k, extremes, lambda_table) -> dict[str, object]:
    """Prototype memorization: the run's protocol, phases and verdict, the rows of W1 shown (`top_k`), the
    extremes of W1 at the last checkpoint (`extremes`, `prototypes.weight_extremes`) and FC1's largest
    eigenvalues there against the MP edge (`lambda_table`, `prototypes.lambda_max_table`)."""
    w1 = extremes.xs(("final", "fc1"), level=("checkpoint", "layer"))
    fc1 = lambda_table.loc[("final", "fc1")]
    return {**_protocol(config), **_reached(result, phases), "top_k": str(top_k),
            "w1_min": f"{w1['min'].min():.2f}", "w1_max": f"{w1['max'].max():.2f}",
            "w1_ratio": f"{w1['max |w| / sd'].max():.1f}",
            "final_w_ratio": f"{fc1['lambda_max X(W)'] / fc1['lambda_plus']:.2f}",
            "final_rand_ratio": f"{fc1['lambda_max X(W_rand)'] / fc1['lambda_plus']:.2f}"}


def llm_weights_values(model_name: str, summary, table) -> dict[str, object]:
    """The LLM chapter: the model, and over all its matrices (`llm.alpha_summary`, row 'all') how many
    were analyzed, their median alpha, how many lie below 2 or above 6 and how many hold a trap; the
    range of alpha of the matrices inside the transformer blocks (`llm.analyze_checkpoint`'s table)."""
    overall, in_blocks = summary.loc["all"], table.dropna(subset=["block"])["alpha"]
    return {"llm_model": model_name, "llm_analyzed": int(overall["analyzed"]),
            "llm_median_alpha": f"{overall['median_alpha']:.2f}", "llm_below_2": int(overall["alpha_below_2"]),
            "llm_above_6": int(overall["alpha_above_6"]), "llm_with_traps": int(overall["with_traps"]),
            "llm_block_alpha_range": f"{in_blocks.min():.1f} to {in_blocks.max():.1f}"}


def alarm_values(config, stored_runs, every_run, every_score, log, bbp_threshold, plant_factor,
                 plant_step) -> dict[str, object]:
    """The alarm chapter: the protocol of its runs (`config`), the numbers it shares with the other
    chapters (`claims.shared_claims` of `stored_runs`), the recommendation over every stored MLP run
    (`every_run`, scored in `every_score`), and the live run's planted fault (`_live_run_values`)."""
    from grokutils import alarm_eval, claims

    return {**_protocol(config),
            **dict(claims.shared_claims(stored_runs["WD = 0"], stored_runs["WD = 0.01"])),
            "every_recommendation": alarm_eval.recommendation(every_score), "n_stored_runs": str(len(every_run)),
            **_live_run_values(log, bbp_threshold, plant_factor, plant_step)}


def _live_run_values(log, bbp_threshold: float, plant_factor: float, plant_step: int) -> dict[str, object]:
    """The alarm chapter's live run: FC1's BBP threshold and the weight planted after `plant_step`, the
    first alarm of the monitor's `log` and FC2's alarms, and FC1's largest shuffled eigenvalue and alpha
    from the last analyzed step before the plant to that alarm, against the fitted bulk edge."""
    first = log[log.alarm].iloc[0]
    fc1 = log[log.layer == "fc1"].set_index("step")
    before = fc1.index[fc1.index <= plant_step].max()  # the last analyzed step before the plant
    return {"bbp_threshold": f"{bbp_threshold:.2f}", "planted_value": f"{plant_factor * bbp_threshold:.2f}",
            "alarm_step": f"{first.step}", "alarm_reason": f"{first.layer}: {first.reason}",
            "fc2_alarms": str(int(log[log.layer == "fc2"].alarm.sum())),
            "rand_max_jump": f"{fc1.max_rand_eval[before]:.1f} to {fc1.max_rand_eval[first.step]:.1f}",
            "bulk_edge": f"{fc1.rand_bulk_max[first.step]:.1f}",
            "alpha_change": f"{fc1.alpha[before]:.2f} to {fc1.alpha[first.step]:.2f}"}


def accelerated_protocol_values(curves, table, precision, protocol, arm, falls, main, short_runs,
                                apart, build, cost) -> dict[str, object]:
    """The accelerated-protocol chapter, section by section: the learning-rate sweep (its `curves`,
    point `table` and `precision` table, at the chosen `protocol`), the three-seed float64 `arm` with
    its per-seed `falls` (`compare.fall_table`, a: float32, b: float64), the protocol's `main` runs,
    their two lengths (`short_runs`; `apart` from `compare.first_divergence`) and the papers' clock,
    with this build's MLP runs (`build`) beside the main ones, and what those cost (`cost`, their
    ledgers' rows from `longrun.ledger_rows`)."""
    return {**_sweep_values(curves, table, protocol), **_sweep_precision_values(precision),
            **_float64_arm_values(arm, falls), **_main_run_values(main, curves, protocol.lr),
            **_length_values(short_runs, main, apart), **_clock_values(main, build), **_cost_values(cost)}


def _sweep_values(curves, table, protocol) -> dict[str, object]:
    """The sweep's point at the chosen protocol, at the papers' (smallest) and at the largest learning
    rate, the steps at which float32 points fit, and which points reach all three phases."""
    from grokutils import compare, prose

    chosen = table.xs((protocol.lr, protocol.dtype), level=["lr", "dtype"]).iloc[0]
    float32_lrs = table.xs("float32", level="dtype").index.get_level_values("lr")
    smallest, largest = float32_lrs.min(), float32_lrs.max()  # the papers' 5e-4 is the smallest
    paper_lr = table.xs((smallest, "float32"), level=["lr", "dtype"]).iloc[0]
    largest_row = table.xs((largest, "float32"), level=["lr", "dtype"]).iloc[0]
    fits = table.xs("float32", level="dtype")["t_fit"].dropna()
    return {"chosen_lr_text": f"{protocol.lr:g}", "chosen_peak": f"{chosen['peak test accuracy']:.3f}",
            "chosen_peak_step": f"{chosen['step of peak']:,}", "chosen_fit_step": prose.steps([chosen["t_fit"]]),
            "paper_lr_final": f"{paper_lr['final test accuracy']:.3f}", "largest_lr": f"{largest:g}",
            "largest_lr_peak": f"{largest_row['peak test accuracy']:.3f}",
            "largest_lr_train": f"{largest_row['final train accuracy']:.3f}",
            "fit_range": prose.steps(fits),  # 'never' where no point fits (the smoke profile's)
            "largest_lr_min_train": f"{curves[curves.lr == largest].train_accuracy.iloc[-1]:.3f}",
            "three_phase_words": prose.say("compare.three_phase", compare.three_phase_values(table))}


def _sweep_precision_values(precision) -> dict[str, object]:
    """float32 - float64 at the chosen learning rate (`sweep.precision_table`): peak, final test
    accuracy and the step of the fit."""
    import pandas as pd

    difference = precision["float32 - float64"]
    fit = difference["t_fit"]
    return {"f32_peak_difference": f"{difference['peak test accuracy']:+.3f}",
            "f32_final_difference": f"{difference['final test accuracy']:+.3f}",
            "f32_fit_difference": "not reached" if pd.isna(fit) else f"{int(fit):+,}"}


def _float64_arm_values(arm, falls) -> dict[str, object]:
    """The float64 arm against float32, seed by seed: test accuracy at the last shared step, the falls
    and their difference with its interval (`compare.precision_values`), and each precision's verdict."""
    from grokutils import claims, compare, prose
    from grokutils.paper import mean_sd

    collapse = {name: claims.collapse_table(run) for name, run in arm.items()}
    reading = compare.precision_values(falls, int(collapse["float32"].train_held.sum()))
    return {"f64_last_step": f"{int(falls.step.iloc[0]):,}",
            "f64_test_difference": mean_sd(falls["test difference"], "+.3f", ".3f"),
            "f32_short_fall": mean_sd(falls["fall a"], ".3f"), "f64_fall": mean_sd(falls["fall b"], ".3f"),
            "f64_fall_difference": mean_sd(falls["fall difference"], "+.3f", ".3f"),
            "f64_share": f"{falls['fall difference'].mean() / falls['fall a'].mean():.0%}",
            "f64_reading": prose.say("compare.precision", reading),
            **{f"{name}_arm_verdict": claims.verdict_words(table) for name, table in collapse.items()}}


def _main_run_values(main, curves, chosen_lr: float) -> dict[str, object]:
    """The protocol's main runs: steps, checkpoints, training minutes, the WD = 0 run's falls, and its
    seed-to-seed spread of test accuracy where the sweep's points at the chosen learning rate end."""
    from grokutils import claims
    from grokutils.paper import mean_sd

    wd0 = main[0.0]
    end = curves[curves.lr == chosen_lr].step.max()  # where the float32 and float64 points end
    horizon = max(step for step in wd0.curves.step.unique() if step <= end)
    spread = wd0.curves[wd0.curves.step == horizon].test_accuracy
    collapse = claims.collapse_table(wd0)  # smoothed, per seed, as every chapter reads a fall
    return {"main_steps": f"{wd0.config.steps:,}", "main_checkpoints": f"{wd0.config.n_checkpoints}",
            "train_minutes": " and ".join(f"{run.meta['timings']['train_s'] / 60:.0f}" for run in main.values()),
            "main_held_fall": mean_sd(collapse.held_fall, ".3f"), "main_fall": mean_sd(collapse.fall, ".3f"),
            "seed_spread": f"{spread.std():.3f} (step {horizon:,}, {len(spread)} seeds)"}


def _length_values(short_runs, main, apart) -> dict[str, object]:
    """The two lengths of each run: their test-accuracy difference at the shorter one's end and at
    its largest, where their seeds part (`apart`), and each length's verdict, fall and train accuracy."""
    from grokutils import claims, compare, prose
    from grokutils.paper import mean_sd

    values = {"short_steps": f"{short_runs[0.0].config.steps:,}",
              "len_divergence": prose.say("compare.divergence", compare.divergence_values(apart))}
    for wd, key in ((0.0, "wd0"), (0.01, "wd001")):
        pair = compare.length_pair(short_runs[wd], main[wd], "test_accuracy")
        end, worst = pair.index.max(), pair["difference"].abs().idxmax()
        values[f"len_{key}_end"] = f"{pair.loc[end, 'difference']:+.3f} ± {pair.loc[end, 'sd of difference']:.3f}"
        values[f"len_{key}_spread"] = f"{pair.loc[end, 'sd a']:.3f}"
        values[f"len_{key}_worst"] = f"{pair.loc[worst, 'difference']:+.3f} at step {worst:,}"
        for label, run in (("short", short_runs[wd]), ("long", main[wd])):
            collapse = claims.collapse_table(run)
            values[f"len_{key}_{label}_verdict"] = claims.verdict_words(collapse)
            values[f"len_{key}_{label}_fall"] = mean_sd(collapse.fall, ".3f")
            values[f"len_{key}_{label}_train"] = mean_sd(claims.smoothed_end(run, "train_accuracy"), ".3f")
    return values


def _clock_values(main, build) -> dict[str, object]:
    """The main runs on the papers' clock (lr x steps): their length, the factor, each run's peak and
    smoothed end, the level the papers' test accuracy falls to, every run of the clock's figure,
    this build's among them where they are other runs (`compare.protocols_on_clock_values`), and what
    this build's MLP chapters read (`paper.protocol_context_values`)."""
    from grokutils import claims, compare, prose
    from grokutils.paper import COLLAPSE_TEST_ACCURACY, mean_sd, protocol_context_values
    from grokutils.phases import find_phases

    lr = main[0.0].config.lr
    values = {"clock_main_steps": f"{compare.paper_clock([main[0.0].config.steps], lr)[0]:,.0f}",
              "clock_factor": f"{lr / compare.PAPER_LR:g}", "paper_level": f"{COLLAPSE_TEST_ACCURACY:g}"}
    for wd, key in ((0.0, "wd0"), (0.01, "wd001")):
        peak = find_phases(main[wd].curves).t_peak
        values[f"clock_peak_{key}"] = f"{compare.paper_clock([peak], main[wd].config.lr)[0]:,.0f}"
        values[f"clock_end_{key}"] = mean_sd(claims.collapse_table(main[wd]).final_test_accuracy, ".3f")
    side_by_side = compare.protocols_on_clock_values(compare.by_protocol(main, build), main)
    values["protocols_on_clock_words"] = prose.say("compare.protocols_on_clock", side_by_side)
    values["build_protocol_context"] = prose.say("paper.build_reads", protocol_context_values(build[0.0].config))
    return values


def _cost_values(cost) -> dict[str, object]:
    """What this build's MLP runs cost, from their ledgers' rows (`longrun.cost_values`)."""
    from grokutils import prose
    from grokutils.tools import longrun

    return {"build_cost_words": prose.say("longrun.cost", longrun.cost_values(cost))}


def scorecard_values(wd0, wd001, card, modadd_card) -> dict[str, object]:
    """The scorecard: the protocol of the reduced-scale runs `wd0` and `wd001`, the numbers shared with
    the other chapters (`claims.shared_claims`), and how many claims of the MLP `card` and of the
    `modadd_card` got each verdict, are counted, context or derived, or rest on a wide-tail fit."""
    from grokutils import claims, scorecard

    values = {**_protocol(wd0.config), **dict(claims.shared_claims(wd0, wd001))}
    for prefix, counts in (("n_", scorecard.verdict_counts(card, "verdict, own edges")),
                           ("modadd_n_", scorecard.verdict_counts(modadd_card))):
        values.update({f"{prefix}{verdict.replace(' ', '_')}": str(int(n)) for verdict, n in counts.items()})
    values.update({f"n_{kind}": str(int((card.counted == counted).sum()))
                   for kind, counted in (("claims", "yes"), ("context", "context"), ("derived", "derived"))})
    values.update({"n_modadd_claims": str(len(modadd_card)),
                   "n_flagged": str(int(card["flagged, own edges"].astype(bool).sum())),
                   "n_flagged_reproduced": str(int(scorecard.flagged_counts(card)["reproduced"])),
                   "n_paper_scale_not_run": str(int(scorecard.verdict_counts(card, "verdict, paper scale")
                                                    ["not run yet"]))})
    return values
