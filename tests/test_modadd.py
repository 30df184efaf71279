"""grokutils.modadd and its config, schedule, loop, measures and tables (shared engine tests: test_engine.py)."""
from __future__ import annotations

import dataclasses

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F

from grokutils import modadd, modadd_analysis, paper, spectra, store, tasks, transformer
from grokutils.config import ModAddConfig
from grokutils.data import modular_addition_data
from grokutils.modadd import learning_rate
from grokutils.phases import find_phases
from grokutils.plots import modadd as modadd_plots
from grokutils.train import epoch_rows, train_seed

matplotlib.use("Agg")
SMALL = dict(p=23, train_fraction=0.5)  # 529 pairs, 264 for training: fast, same code paths


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps must be a positive integer, got 0"),
    ("n_seeds", 1.5, "n_seeds must be a positive integer, got 1.5"),
    ("lr", -1e-3, "lr must be a positive finite number, got -0.001"),
    ("lr", float("inf"), "lr must be a positive finite number, got inf"),
    ("lr", float("nan"), "lr must be a positive finite number, got nan"),
    ("eps", float("inf"), "eps must be a positive finite number, got inf"),
    ("weight_decay", -1.0, "weight_decay must be a non-negative finite number, got -1.0"),
    ("weight_decay", float("inf"), "weight_decay must be a non-negative finite number, got inf"),
    ("beta2", 1.0, r"beta2 must be a number in \(0, 1\), got 1.0"),
    ("train_fraction", 0.0, r"train_fraction must be a number in \(0, 1\), got 0.0"),
    ("warmup_steps", -1, "warmup_steps must be a non-negative integer, got -1"),
    ("batch_size", 5000, "batch_size must be at most the 3831 training pairs, got 5000"),
    ("dtype", "float16", "dtype must be one of"),
    ("step_impl", "jit", "step_impl must be one of"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        ModAddConfig(**{field: value})


def test_defaults_are_nandas_settings_and_every_field_hashes():
    config = ModAddConfig()
    assert (config.lr, config.beta1, config.beta2, config.weight_decay) == (1e-3, 0.9, 0.98, 1.0)
    assert (config.warmup_steps, config.batch_size, config.train_fraction, config.data_seed) == (10, 0, 0.3, 0)
    assert (config.p, config.dtype, config.step_impl) == (113, "float32", "fast")
    assert config.slug() == "modadd-wd1-lr0.001-frac0.3-1000000steps-1seeds"
    hashes = {store.config_hash(dataclasses.replace(config, **change))
              for change in ({}, {"weight_decay": 0.1}, {"eps": 1e-7}, {"step_impl": "reference"})}
    assert len(hashes) == 4
    assert store.config_hash(ModAddConfig(weight_decay=1, lr=0.001)) == store.config_hash(config)  # int == float


def test_warmup_is_linear_from_zero_over_ten_updates():
    config = ModAddConfig()
    assert [learning_rate(config, t) for t in (0, 5, 10, 500)] == [0.0, 5e-4, 1e-3, 1e-3]
    assert learning_rate(dataclasses.replace(config, warmup_steps=0), 0) == 1e-3


def test_minibatches_cover_every_pair_once_per_epoch_and_reshuffle():
    config = ModAddConfig(batch_size=1000)
    epoch0 = torch.cat([epoch_rows(0, step, 3831, config.batch_size) for step in range(4)])
    epoch1 = torch.cat([epoch_rows(0, step, 3831, config.batch_size) for step in range(4, 8)])
    assert sorted(epoch0.tolist()) == list(range(3831)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)


def test_trainer_matches_a_plain_pytorch_loop(tmp_path):
    """Reference step, float64: our trainer and Nanda's recipe written out agree bitwise."""
    config = ModAddConfig(steps=15, n_checkpoints=3, dtype="float64", step_impl="reference", **SMALL)
    data = modular_addition_data(23, 0.5, 0)
    train_seed(tasks.MODADD, config, 0, data, tmp_path, torch.device("cpu"), progress=False)
    ours = torch.load(tmp_path / "state.pt", weights_only=True)["model"]
    for name, tensor in nanda_loop(data, 15).items():
        assert torch.equal(tensor, ours[name]), name


def nanda_loop(data, steps: int, fused: bool = False) -> dict[str, torch.Tensor]:
    """Nanda et al.'s recipe written out in plain PyTorch (float64, p = 23): the final weights."""
    model = transformer.make_transformer(0, p=23, dtype="float64")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=1.0, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(step / 10, 1))
    tokens, labels = data.tokens[data.train_idx], data.labels[data.train_idx]
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(tokens)[:, -1], labels).backward()
        optimizer.step()
        scheduler.step()
    return model.state_dict()


def test_measures_are_complete_and_sane(tiny_modadd):
    curves, final = tiny_modadd.curves, tiny_modadd.curves.iloc[-1]
    for column in ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "l2_norm",
                   "key_gram_lambda_max_h3", "dft_peak_embed", "dft_peak_unembed", "dft_peak_keys",
                   "kernel_contrast_test"):
        assert curves[column].notna().all(), column
    assert curves.train_accuracy.between(0, 1).all() and final.train_accuracy > curves.train_accuracy.iloc[0]
    assert tiny_modadd.layers.traps.notna().all()
    step = int(final.step)
    assert tiny_modadd.array(0, step, "embed", "dft").shape == (23,)
    assert tiny_modadd.array(0, step, "keys.h2", "projection").shape == (23,)
    assert tiny_modadd.array(0, step, "logits", "kernel_test").shape == (23,)
    assert tiny_modadd.array(0, step, "fc1", "evals").shape == (128,)
    assert set(tiny_modadd.weights(0, "final")) >= {"embed.weight", "pos_embed.weight", "unembed.weight"}


def test_trap_threshold_uses_the_units_of_weightwatchers_fit(tiny_modadd):
    """rand_bulk_max is lambda_plus in raw units: times n / ||W||_F^2 it is the fit's lambda_plus."""
    step = int(tiny_modadd.curves.step.iloc[-1])
    row = tiny_modadd.layers.query("step == @step and layer == 'fc1'").iloc[0]
    evals = tiny_modadd.array(0, step, "fc1", "evals").astype(float)
    q, m = row.N / row.M, int(row.M)
    lambda_plus = (row.rand_sigma_mp * (1 + q**-0.5)) ** 2
    assert row.rand_bulk_max * len(evals) / evals.sum() == pytest.approx(lambda_plus, rel=1e-4)
    assert spectra.trap_threshold(row.rand_sigma_mp, q, m) > lambda_plus


def test_measured_accuracy_matches_the_reference_forward(tiny_modadd):
    state = tiny_modadd.weights(0, "final")
    model = transformer.make_transformer(0, p=23)
    model.load_state_dict(state)
    data = modular_addition_data(23, 0.5, 0)
    with torch.no_grad():
        predicted = model(data.tokens[data.test_idx])[:, -1].argmax(1)
    accuracy = (predicted == data.labels[data.test_idx]).double().mean().item()
    assert accuracy == pytest.approx(tiny_modadd.curves.test_accuracy.iloc[-1], abs=1e-12)


def test_tables_and_figures_draw_from_a_run(tiny_modadd):
    phases = find_phases(tiny_modadd.curves)
    table5 = modadd_analysis.accuracy_table(tiny_modadd, phases)
    assert list(table5.index) == list(paper.PHASES)
    table6 = modadd_analysis.layer_phase_table(tiny_modadd, phases, "alpha", paper.MODADD_TABLE6_ALPHA)
    assert list(table6.index) == [*transformer.ANALYZED, "mean"]
    assert table6[("anti-grokking", "paper")]["mean"] == "3.89 ± 0.68"
    for table in (modadd_analysis.key_gram_table(tiny_modadd, phases), modadd_analysis.dft_table(tiny_modadd, phases),
                  modadd_analysis.kernel_table(tiny_modadd, phases),
                  modadd_analysis.search_table(ModAddConfig(), [tiny_modadd])):
        assert len(table) > 0
    for figure in (modadd_plots.layers_and_accuracy_figure(tiny_modadd, phases, "traps", "traps"),
                   modadd_plots.esd_figure(tiny_modadd, phases), modadd_plots.dft_figure(tiny_modadd, phases),
                   modadd_plots.kernel_figure(tiny_modadd, phases),
                   modadd_plots.search_figure(ModAddConfig(), [tiny_modadd, tiny_modadd])):
        plt.close(figure)


def test_the_search_bar_needs_a_fall_of_0_2_with_train_accuracy_held():
    from grokutils.phases import Phases

    def phases(peak, final, held, fit=10):
        """Train held to the end, or slipping at step 600 with test still at its peak before it."""
        return Phases(fit, 100, None, 1000, peak, final, t_held_end=1000 if held else 500,
                      held_test_accuracy=final if held else peak, t_slip=None if held else 600)

    assert modadd_analysis.search_verdict(phases(1.0, 0.79, True)).startswith("yes")
    assert modadd_analysis.search_verdict(phases(1.0, 0.81, True)) == "no: falls 0.19 (< 0.2)"
    assert modadd_analysis.search_verdict(phases(1.0, 0.3, False)) == (
        "no: falls 0.70, but only 0.00 with train accuracy held")
    assert modadd_analysis.search_verdict(phases(0.1, 0.0, False, fit=None)) == "no: never fits the training set"


def test_search_configs_refuse_unknown_fields():
    base = ModAddConfig(steps=100, n_seeds=3)
    configs = modadd.search_configs(base, [{"weight_decay": 0.1}, {"lr": 3e-3, "train_fraction": 0.5}])
    assert [(c.weight_decay, c.lr, c.n_seeds) for c in configs] == [(0.1, 1e-3, 1), (1.0, 3e-3, 1)]
    with pytest.raises(ValueError, match=r"unknown fields \['wd'\]"):
        modadd.search_configs(base, [{"wd": 0.1}])


def test_paper_tables_cover_every_analyzed_layer():
    assert paper.MODADD_LAYERS == transformer.ANALYZED
    for table in (paper.MODADD_TABLE6_ALPHA, paper.MODADD_TABLE7_TRAPS):
        assert set(table) == {*transformer.ANALYZED, "mean"}


@pytest.mark.parametrize("step_impl, name, eager", [("compiled", "loss", "loss"), ("lean", "lean", "lean_loss")])
def test_compiled_losses_match_their_eager_loss_and_fall_back_when_compiling_fails(monkeypatch, caplog, step_impl,
                                                                                   name, eager):
    from grokutils.modadd import cached_data, split_batch
    from grokutils.transformer import FullBatch, make_transformer

    batch = split_batch(cached_data(113, 0.3, 0), "train").subset(torch.arange(64))
    model = make_transformer(0, 113, "float64")
    monkeypatch.setattr(modadd, "_COMPILED", {})
    compiled, eager = modadd.loss_function(ModAddConfig(step_impl=step_impl)), getattr(FullBatch, eager)
    loss = compiled(batch, model)
    loss.backward()
    grads = [w.grad.clone() for w in model.parameters()]
    model.zero_grad()
    expected = eager(batch, model)
    expected.backward()
    assert float(loss) == pytest.approx(float(expected), rel=1e-12)
    for mine, theirs in zip(grads, (w.grad for w in model.parameters())):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(modadd, "_COMPILED", {name: broken})
    with caplog.at_level("WARNING"):
        assert float(compiled(batch, model)) == pytest.approx(float(expected), rel=1e-12)
    assert f"modular-addition loss '{name}' failed (RuntimeError: no compiler here)" in caplog.text
    assert modadd._COMPILED[name] is eager


def test_the_lean_step_trains_as_the_plain_loop_with_the_fused_adamw(tmp_path):
    """step_impl="lean", float64: the trainer and Nanda's recipe written out (fused AdamW) agree to round-off."""
    config = ModAddConfig(steps=15, n_checkpoints=3, dtype="float64", step_impl="lean", **SMALL)
    model = transformer.make_transformer(0, p=23, dtype="float64")
    assert modadd.make_optimizer(config, model.parameters()).defaults["fused"]
    assert not modadd.make_optimizer(dataclasses.replace(config, step_impl="compiled"),
                                     model.parameters()).defaults["fused"]
    data = modular_addition_data(23, 0.5, 0)
    train_seed(tasks.MODADD, config, 0, data, tmp_path, torch.device("cpu"), progress=False)
    ours = torch.load(tmp_path / "state.pt", weights_only=True)["model"]
    for name, tensor in nanda_loop(data, 15, fused=True).items():
        torch.testing.assert_close(ours[name], tensor, rtol=0, atol=1e-10, msg=name)


def test_init_from_is_checked_and_a_late_field_keeps_old_hashes():
    with pytest.raises(ValueError, match="init_from must be '' or 'RUN:WHICH'"):
        ModAddConfig(init_from="some-run:middle")
    config = ModAddConfig(steps=1200, lr=3e-3, n_checkpoints=16)
    assert store.config_hash(config) == "dcbdf0b4b184"  # the committed chapter 03 run, stored before init_from
    continued = dataclasses.replace(config, init_from="x:final")
    assert store.config_hash(continued) != store.config_hash(config)
    assert continued.slug().endswith("-continued")


def test_a_run_continues_from_the_weights_another_run_kept(tiny_modadd):
    source = f"{tiny_modadd.path}:final"
    config = dataclasses.replace(tiny_modadd.config, init_from=source, weight_decay=0.0)
    weights = modadd.initial_weights(config, 0)
    kept = tiny_modadd.weights(0, "final")
    model, _ = tasks.MODADD.model_and_optimizer(config, [0], torch.device("cpu"))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, kept[name].to(tensor.dtype)) and torch.equal(weights[name], tensor), name
    with pytest.raises(ValueError, match="they must share the data"):
        modadd.initial_weights(dataclasses.replace(config, data_seed=1), 0)
    with pytest.raises(ValueError, match="not seed 1"):
        modadd.initial_weights(config, 1)
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        modadd.initial_weights(dataclasses.replace(config, init_from=f"{tiny_modadd.path}-missing:final"), 0)


def test_late_l2_change_reads_from_a_fraction_of_the_last_step():
    import pandas as pd

    from grokutils.store import RunResult

    steps = [0, 10, 100, 1000]
    curves = pd.DataFrame({"seed": 0, "step": steps, "l2_norm": [1.0, 2.0, 4.0, 5.0]})
    run = RunResult(path=None, config=ModAddConfig(), meta={}, curves=curves, layers=pd.DataFrame())
    assert modadd_analysis.late_l2_change(run, decades=1) == pytest.approx(0.2)  # from step 100 (4.0) to 1000 (5.0)
    assert modadd_analysis.late_l2_change(run, decades=2) == pytest.approx(0.6)  # from step 10 (2.0)


def test_init_from_main_follows_the_main_runs_current_settings():
    """Issue 34: 'main:final' resolves to the stored folder of the base config, so a search entry
    continues from the main run the profile names now, not from a hash typed in earlier."""
    import dataclasses

    from grokutils.store import run_dir
    from grokutils.tools import train as train_cli

    base = ModAddConfig(steps=100, n_seeds=3)
    (config,) = modadd.search_configs(base, [{"init_from": "main:final", "weight_decay": 0.0}])
    assert config.init_from == f"{run_dir(base, '.').name}:final" and config.n_seeds == 1
    faster = dataclasses.replace(base, lr=3e-3)
    (moved,) = modadd.search_configs(faster, [{"init_from": "main:best"}])
    assert moved.init_from == f"{run_dir(faster, '.').name}:best" != config.init_from.replace("final", "best")
    (literal,) = modadd.search_configs(base, [{"init_from": "some-run-abc:init"}])
    assert literal.init_from == "some-run-abc:init"
    from_cli = train_cli.config_of("modadd", "accelerated", {"init_from": "main:final"})
    from grokutils import runs
    assert from_cli.init_from == f"{run_dir(runs.modadd_config('accelerated'), '.').name}:final"
