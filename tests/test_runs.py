"""grokutils.runs: a profile's run entries are checked when the profile is read, with its file named."""
from __future__ import annotations

import pytest

from grokutils import runs


def _profile(tmp_path, text: str):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


def test_the_profiles_weight_decay_is_refused_not_dropped(tmp_path):
    """The chapters choose the MLP's weight decay (0 and 0.01): a profile that sets it is refused."""
    path = _profile(tmp_path, "runs:\n  mlp: {steps: 10, weight_decay: 0.1}\n")
    for read in (runs.read_profile, lambda p: runs.mlp_config(0.0, p), lambda p: runs.mlp_config(0.01, p)):
        with pytest.raises(ValueError, match=r"mine.yaml: runs.mlp sets weight_decay=0.1; the chapters choose "
                                             r"the MLP's weight decay \(0.0 and 0.01\)"):
            read(path)


def test_the_chapters_weight_decay_is_used():
    assert runs.mlp_config(0.01, "accelerated").weight_decay == 0.01
    assert runs.mlp_config(0.0, "accelerated").weight_decay == 0.0


def test_a_yaml_syntax_error_names_the_file(tmp_path):
    path = _profile(tmp_path, "runs:\n  mlp: {steps: 10, lr: 0.001\n")
    with pytest.raises(ValueError, match=rf"{path}: not valid YAML") as raised:
        runs.read_profile(path)
    assert "<unicode string>" not in str(raised.value)


def test_a_number_yaml_reads_as_text_says_how_to_write_it(tmp_path):
    path = _profile(tmp_path, "runs:\n  mlp: {steps: 10, lr: 1e-3}\n")
    with pytest.raises(ValueError, match=r"mine.yaml: runs.mlp: lr must be a positive finite number, got '1e-3' "
                                         r"\(text, not a number: write 1.0e-3 or 0.001\)"):
        runs.read_profile(path)


@pytest.mark.parametrize("entry, message", [
    ("mlp: {steps: -5}", "runs.mlp: steps must be a positive integer, got -5"),
    ("modadd: {beta1: 1.5}", r"runs.modadd: beta1 must be a number in \(0, 1\), got 1.5"),
    ("mlp: {device: 3}", "runs.mlp: device must be a string"),
    ("mlp: [1, 2]", "runs.mlp must be a mapping of fields to values"),
])
def test_bad_values_are_named_when_the_profile_is_read(tmp_path, entry, message):
    """Before any notebook starts (execute reads the profile first), not deep in a kernel."""
    with pytest.raises(ValueError, match=f"mine.yaml: {message}"):
        runs.read_profile(_profile(tmp_path, f"runs:\n  {entry}\n"))


def test_the_committed_profiles_read_cleanly():
    for name in runs.available_profiles():
        sections = runs.read_profile(name)
        assert "weight_decay" not in sections["runs"].get("mlp", {}), name
