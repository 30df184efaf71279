"""The command-line trainer: profile entry plus --set overrides, bad input refused before work."""
import pytest
import torch

from grokutils.tools import train as train_cli


def test_sets_apply_on_top_of_the_profile_and_keep_committed_hashes():
    config = train_cli.config_of("mlp", "accelerated", train_cli.parse_sets(["weight_decay=0.01"]))
    assert (config.steps, config.lr, config.dtype, config.weight_decay) == (1000000, 0.005, "float32", 0.01)
    from grokutils import store
    assert store.run_dir(config, store.Path("results")).name == "mlp-wd0.01-1000000steps-3seeds-49605ba5de63"
    short = train_cli.config_of("mlp", "accelerated", train_cli.parse_sets(["steps=200000", "n_checkpoints=100"]))
    assert store.run_dir(short, store.Path("results")).name == "mlp-wd0-200000steps-3seeds-12546fd2f92b"


@pytest.mark.parametrize("items, message", [
    (["steps"], "FIELD=VALUE"),
    (["stepz=5"], "not fields of MLPConfig"),
    (["steps=-5"], "steps must be a positive integer, got -5"),
])
def test_bad_sets_are_named(items, message):
    with pytest.raises(ValueError, match=message):
        train_cli.config_of("mlp", "accelerated", train_cli.parse_sets(items))


def test_unknown_experiment_and_dry_run(capsys, tmp_path):
    with pytest.raises(ValueError, match="experiment must be one of"):
        train_cli.config_of("cnn", "accelerated", {})
    assert train_cli.main(["mlp", "--set", "steps=10", "--dry-run", "--results-dir", str(tmp_path)]) == 0
    assert "mlp-wd0-10steps-3seeds" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("arguments, message", [
    (["mlp", "--device", "cuda:3"], "CUDA devices here: 0"),
    (["mlp", "--workers", "-1"], "--workers must be a non-negative integer"),
    (["mlp", "--threads", "0"], "--threads must be a positive integer"),
    (["modadd", "--set", "init_from=no-such-run:final"], "no-such-run: not a finished run"),
])
def test_dry_run_checks_what_a_run_would_refuse(arguments, message, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        train_cli.main([*arguments, "--dry-run"])
    assert message in capsys.readouterr().err
