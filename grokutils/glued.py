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


def data_values(mnist, modadd) -> dict[str, object]:
    """The data: the sizes of the MNIST subset and of the modular-addition training split."""
    return {"n_train": len(mnist.train_y), "n_test": len(mnist.test_y), "modadd_n_train": len(modadd.train_idx)}


# ---- the MLP and the modular-addition chapters ---------------------------------------------------
# (imports inside the functions: each chapter's function loads only what its chapter uses)


def _protocol(config) -> dict[str, object]:
    """The sentence on the run's protocol that an MLP chapter states at its top (`paper.protocol_note`)."""
    from grokutils import paper

    return {"protocol": paper.protocol_note(config)}


def _reached(result, phases) -> dict[str, object]:
    """The stretches a run reached and its per-seed verdict by the phase rule (chapters 04 and 05)."""
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


# ---- the LLM, alarm, accelerated-protocol and scorecard chapters ---------------------------------
# (functions llm_weights_values, alarm_values, accelerated_protocol_values, scorecard_values go here)
