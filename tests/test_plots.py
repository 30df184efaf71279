"""grokutils.plots.mlp: every MLP figure and table builds from a finished run."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from grokutils.mlp import with_average_alpha  # noqa: E402
from grokutils.phases import find_phases  # noqa: E402
from grokutils.plots import mlp as figures  # noqa: E402


@pytest.mark.parametrize("name", ["accuracy_figure", "alpha_figure", "traps_figure", "progress_measures_figure"])
def test_figures_draw(tiny_run, name):
    fig = getattr(figures, name)(tiny_run, find_phases(tiny_run.curves))
    assert fig.axes and any(ax.lines for ax in fig.axes)
    plt.close(fig)


def test_alpha_table_puts_paper_beside_ours(tiny_run):
    table = figures.alpha_table(tiny_run, find_phases(tiny_run.curves))
    assert table.loc[("fc1", "anti-grokking"), "paper"] == "0.9 ± 0.4"
    assert table.loc[("average", "pre-grokking"), "ours, paper's edge"] == "not reached"
    assert "(step 30; tail " in table.loc[("fc1", "pre-grokking"), "ours, our edge"]  # the tail size beside alpha
    assert "(step 30)" in table.loc[("average", "pre-grokking"), "ours, our edge"]


def test_traps_table_uses_the_right_paper_rows(tiny_run):
    table = figures.traps_table(tiny_run, find_phases(tiny_run.curves))
    assert table.loc[("fc1", "anti-grokking"), "paper"] == "7.5 ± 5.6"


def test_average_alpha_is_mean_of_fc1_fc2(tiny_run):
    frame = with_average_alpha(tiny_run.layers)
    at = frame[(frame.seed == 0) & (frame.step == 30)].set_index("layer").alpha
    assert at["average"] == pytest.approx((at["fc1"] + at["fc2"]) / 2)


def test_comparison_table(tiny_run):
    table = figures.comparison_table({"a": tiny_run, "b": tiny_run})
    assert list(table.columns) == ["a", "b"] and "final test accuracy, smoothed" in table.index


@pytest.mark.parametrize("height", [3.0, 12.8])
def test_protocol_stamp_keeps_the_same_margin_in_inches_on_short_and_tall_figures(tiny_run, height):
    """The stamp's margin is fixed in inches, so a tall figure gets no band of blank space."""
    from grokutils import paper
    from grokutils.plots.common import STAMP_MARGIN_INCHES, stamp_protocol

    fig, _ = plt.subplots(figsize=(6, height))
    fig.subplots_adjust(bottom=0.02)
    stamp_protocol(fig, tiny_run.config)
    assert fig.subplotpars.bottom * height == pytest.approx(STAMP_MARGIN_INCHES)
    assert [text.get_text() for text in fig.texts] == [paper.protocol_short(tiny_run.config)]
    plt.close(fig)


def test_fit_diagnostics_figure_draws(tiny_run):
    from grokutils import fits
    from grokutils.plots.fits import fit_diagnostics_figure

    fig = fit_diagnostics_figure(fits.fixed_tail_alpha(tiny_run), find_phases(tiny_run.curves), tiny_run.config)
    assert len(fig.axes) >= 4 and all(ax.lines for ax in fig.axes[:4])
    plt.close(fig)


def test_weight_collapse_finds_the_first_fall_of_the_norm_below_one_percent():
    from types import SimpleNamespace

    import pandas as pd

    from grokutils.modadd_analysis import weight_collapse

    steps = [0, 10, 20, 30, 40]
    curves = pd.DataFrame({"seed": 0, "step": steps, "l2_norm": [5.0, 30.0, 31.0, 0.2, 2.0],
                           "train_loss": [4.7, 0.1, 1e-7, 4.7, 4.7], "train_accuracy": [0.0, 1.0, 1.0, 0.01, 0.02],
                           "test_accuracy": [0.0, 0.9, 1.0, 0.01, 0.03]})
    found = weight_collapse(SimpleNamespace(curves=curves))
    assert found == {"step_before": 20, "step": 30, "norm_before": 31.0, "norm": 0.2, "train_loss_before": 1e-7,
                     "train_accuracy_after": 0.02, "test_accuracy_after": 0.03}
    curves.loc[3, "l2_norm"] = 0.4  # 1.3% of the largest norm so far: not a collapse
    assert weight_collapse(SimpleNamespace(curves=curves)) is None


@pytest.mark.parametrize("fields, name", [
    ({}, "paper scale"),
    ({"dtype": "float32"}, "papers' protocol in float32"),
    ({"steps": 2_000}, "reduced run"),
    ({"steps": 2_000, "dtype": "float32"}, "reduced run in float32"),
    ({"lr": 5e-3, "dtype": "float32", "steps": 1_000_000}, "accelerated protocol"),
    ({"lr": 5e-3, "steps": 200_000}, "accelerated protocol in float64, 2e5 steps"),  # its float64 arm
    ({"lr": 5e-3, "steps": 200_000, "dtype": "float32"}, "accelerated protocol, 2e5 steps"),  # its first runs
    ({"lr": 5e-3, "steps": 2_000}, "accelerated protocol in float64, 2e3 steps"),  # named by what differs
    ({"lr": 1e-3, "steps": 2_000}, "custom run"),  # not the accelerated protocol just for another lr
])
def test_protocol_name_says_what_a_run_is(fields, name):
    from grokutils import paper
    from grokutils.config import MLPConfig

    config = MLPConfig(**fields)
    assert paper.protocol_name(config) == name
    listed = name.replace(" in float32", "")  # the note lists float32 among the differences instead
    assert paper.protocol_note(config).startswith(listed[0].upper() + listed[1:])


@pytest.mark.parametrize("fields, words", [
    ({"lr": 5e-3, "dtype": "float32", "steps": 1_000_000},
     "the accelerated protocol, a learning rate 10 times the papers' over 10 times fewer steps, in float32,"),
    ({"lr": 5e-3, "dtype": "float32", "steps": 200_000},
     "the accelerated protocol, a learning rate 10 times the papers', in float32,"),  # not the papers' clock
    ({"dtype": "float32"}, "the papers' own protocol, their learning rate for their number of steps, in float32 "
                           "rather than their float64."),
    ({}, "the papers' settings at full scale."),
    ({"steps": 2_000}, "a reduced run, which tests the code"),
])
def test_protocol_context_says_what_the_build_reads_and_why(fields, words):
    """The sentence after each MLP chapter's protocol note, true under every profile (issue 30)."""
    from grokutils import paper, prose
    from grokutils.config import MLPConfig

    values = paper.protocol_context_values(MLPConfig(**fields))
    sentence = prose.say("paper.context", values)
    assert sentence.startswith("The MLP chapters of this build read ") and words in sentence
    in_chapter_08 = prose.say("paper.build_reads", values)  # after it names the accelerated protocol
    if values["kind"] == "accelerated":
        assert in_chapter_08 == "The MLP chapters of this build read it."
    else:
        assert in_chapter_08.startswith(sentence) and in_chapter_08.endswith("beside the accelerated ones.")


def _small_print_figure(width: float) -> plt.Figure:
    """Two panels with 7-pt text, a 7-pt legend and 7-pt tick labels, a 20-pt title."""
    fig, axes = plt.subplots(1, 2, figsize=(width, 3.5))
    for ax in axes:
        ax.plot([1, 10, 100], [0.1, 0.5, 0.9], label="test")
        ax.set_xscale("log")
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
        ax.text(1, 0.5, "phase", fontsize=7)
    fig.suptitle("big title", fontsize=20)
    return fig


def test_legible_raises_small_text_of_a_wide_figure_to_the_book_minimum():
    """Issue 32: an 11-in figure is shown at 768 px, where 7-pt text is 6.8 px tall."""
    from grokutils.plots.common import MIN_TEXT_PX, book_scale, legible, shown_text_px, smallest_text

    fig = _small_print_figure(11)
    scale = book_scale(fig)
    assert scale == pytest.approx(768 / 1100)
    assert shown_text_px(smallest_text(fig)[0], 100, scale) == pytest.approx(7 * 100 / 72 * 768 / 1100)
    legible(fig)
    assert shown_text_px(smallest_text(fig)[0], 100, scale) == pytest.approx(MIN_TEXT_PX)
    assert fig.get_suptitle() == "big title" and fig._suptitle.get_fontsize() == 20  # larger text untouched
    tick_sizes = {label.get_fontsize() for ax in fig.axes for label in ax.xaxis.get_ticklabels(minor=True)}
    assert min(tick_sizes) >= MIN_TEXT_PX / shown_text_px(1, 100, scale) - 1e-9  # minor tick labels too
    plt.close(fig)


def test_legible_leaves_a_figure_that_fits_the_book_as_it_is():
    from grokutils.plots.common import legible, smallest_text

    fig = _small_print_figure(7)
    before = smallest_text(fig)
    legible(fig)
    assert smallest_text(fig) == before == (7, before[1])  # 9.7 px, shown unscaled
    plt.close(fig)


def test_a_shown_figure_records_its_smallest_text_in_the_png():
    """What the book test reads back: the PNG a notebook shows carries the figure's smallest text
    (after `legible`) and its dpi."""
    import base64
    import io
    import json

    from PIL import Image

    from grokutils.plots.common import TEXT_RECORD_KEY, book_scale, figure_png, shown_text_px

    fig = _small_print_figure(11)
    image = Image.open(io.BytesIO(base64.b64decode(figure_png(fig))))
    record = json.loads(image.text[TEXT_RECORD_KEY])
    assert record["dpi"] == 100
    assert shown_text_px(record["points"], record["dpi"], book_scale(fig)) == pytest.approx(9.0)
    assert image.width <= 1100  # cropped to the content, never wider than the figure
    plt.close(fig)


def test_the_clock_figure_sets_two_protocols_apart_by_line_style_and_stamps_both(tiny_run):
    import dataclasses

    from grokutils import paper
    from grokutils.config import MLPConfig
    from grokutils.plots.common import STAMP_LINE_INCHES, STAMP_MARGIN_INCHES
    from grokutils.plots.compare import TRAIN_FLOOR, clock_figure

    fast = dataclasses.replace(tiny_run, config=MLPConfig(lr=5e-3, steps=30, dtype="float32", n_seeds=2))
    runs = {"accelerated": fast, "papers'": tiny_run}
    fig = clock_figure(runs)
    top, bottom = fig.axes
    assert [line.get_linestyle() for line in top.lines[:2]] == ["-", "--"]  # one style per protocol
    assert top.lines[0].get_color() == top.lines[1].get_color()  # one colour per weight decay
    assert [line.get_linestyle() for line in bottom.lines[:2]] == ["-", "--"]  # train accuracy, the same styles
    assert top.lines[0].get_xdata()[-1] == pytest.approx(10 * top.lines[1].get_xdata()[-1])  # on the papers' clock
    assert bottom.get_ylim()[0] == TRAIN_FLOOR
    stamp = fig.texts[-1].get_text().split("\n")
    assert stamp == [paper.protocol_short(fast.config), paper.protocol_short(tiny_run.config)]
    margin = fig.subplotpars.bottom * fig.get_figheight() / (fig.texts[-1].get_fontsize() / 7)
    assert margin == pytest.approx(STAMP_MARGIN_INCHES + STAMP_LINE_INCHES)  # one more line's room, no more
    plt.close(fig)


def test_a_figure_stamp_names_the_steps_and_the_precision_once():
    from grokutils import paper
    from grokutils.config import MLPConfig

    stamp = paper.protocol_short(MLPConfig(lr=5e-3, steps=200_000, dtype="float32"))
    assert stamp.startswith("accelerated protocol: ") and stamp.count("2e5 steps") == 1, stamp
    papers = MLPConfig(dtype="float32")
    assert paper.protocol_short(papers).startswith("papers' protocol: float32, "), paper.protocol_short(papers)
    assert paper.protocol_note(papers).startswith("Papers' protocol: float32 (paper: float64); ")
    arm = MLPConfig(lr=5e-3, steps=200_000)  # float64, as the papers: only the name says it
    assert paper.protocol_short(arm).startswith("accelerated protocol in float64: 2e5 steps, lr 0.005, "), arm
