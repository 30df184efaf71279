"""The checkpoint command line: safe loading, clear refusals, the table over steps."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from grokutils.tools.monitor import read_log
from grokutils.tools.watch import CheckpointError, checkpoint_matrices, load_state_dict, main, step_from_name, watch


class CodeRunner:
    """Unpickling this runs code: it writes a marker file (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def random_state(plant: float | None = None) -> dict[str, torch.Tensor]:
    """A 100 x 100 Linear layer's state dict; `plant` puts one large entry in (a trap)."""
    weight = torch.randn(100, 100, generator=torch.Generator().manual_seed(0)) / 10
    if plant is not None:
        weight[3, 7] = plant
    return {"fc.weight": weight, "fc.bias": torch.zeros(100)}


@pytest.mark.parametrize("save", ["pickle", "torch"])
def test_pickle_that_would_run_code_is_refused(tmp_path, save):
    marker, path = tmp_path / "marker", tmp_path / "evil.pt"
    pickle.loads(pickle.dumps(CodeRunner(marker)))  # the payload is real: plain unpickling runs it
    assert marker.exists()
    marker.unlink()
    if save == "pickle":
        path.write_bytes(pickle.dumps({"fc.weight": CodeRunner(marker)}))
    else:
        torch.save({"fc.weight": CodeRunner(marker)}, path)
    refused = r"evil.pt: refused: torch.load\(weights_only=True\) .* nothing in it was run"
    with pytest.raises(CheckpointError, match=refused):
        load_state_dict(path)
    assert not marker.exists()


def test_state_dict_that_is_not_a_dict_of_tensors_is_rejected(tmp_path):
    torch.save({"model": random_state(), "step": 3}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match=r"state.pt: not a dict of tensors: entry 'model' is a dict; "
                                              r"its tensor dicts can be read with --key model"):
        load_state_dict(tmp_path / "state.pt")
    assert list(load_state_dict(tmp_path / "state.pt", key="model")) == ["fc.weight", "fc.bias"]
    with pytest.raises(CheckpointError, match=r"no entry 'net' to read with --key; top-level keys: \['model', 'step'"):
        load_state_dict(tmp_path / "state.pt", key="net")
    torch.save([torch.zeros(2, 2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt: not a dict of tensors: it holds a list"):
        load_state_dict(tmp_path / "list.pt")


def test_missing_and_unsupported_paths_fail_clearly(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 16)
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such file or folder" in capsys.readouterr().err
    assert main([str(tmp_path / "notes.txt")]) == 2
    assert "notes.txt: unsupported file type '.txt'; accepted: .pt, .pth, .bin, .ckpt" in capsys.readouterr().err
    assert main([str(tmp_path / "broken.safetensors")]) == 2
    assert "broken.safetensors: not a readable safetensors file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    assert "empty: no checkpoint files" in capsys.readouterr().err


def test_folder_gives_the_table_over_steps(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    save_file(random_state(), folder / "step_000001.safetensors")
    torch.save(random_state(plant=5.0), folder / "ckpt-20.pt")
    (folder / "README.md").write_text("ignored")
    torch.save(random_state(), folder / "best.pt")  # no step in its name: skipped
    assert main([str(folder), "--out", str(tmp_path / "table.csv"), "--fail-on-alarm"]) == 0  # traps: listed
    assert "1 trap" not in capsys.readouterr().out.split("ALARM")[-1]
    assert main([str(folder), "--out", str(tmp_path / "table.csv"), "--fail-on-alarm", "--max-traps", "0"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["step", "layer", "rows", "cols", "alpha", "traps", "reason"]
    assert "ALARM: 1 layer(s) alarm; first at step 20, layer 'fc': 1 trap" in out
    table = read_log(tmp_path / "table.csv")
    assert table.step.tolist() == [1, 20] and table.layer.tolist() == ["fc", "fc"]
    assert table.traps.tolist() == [0, 1] and table.alarm.tolist() == [False, True]


def test_step_is_the_last_run_of_digits(tmp_path):
    assert [step_from_name(Path(name)) for name in ("step_000100.pt", "ckpt-2500.safetensors",
                                                     "epoch3_step700.pth")] == [100, 2500, 700]
    with pytest.raises(CheckpointError, match=r"final.pt: no step in the file name"):
        step_from_name(Path("final.pt"))
    save_file(random_state(), tmp_path / "a_10.safetensors")
    save_file(random_state(), tmp_path / "b_10.safetensors")
    assert main([str(tmp_path)]) == 2


def test_only_floating_2d_and_4d_tensors_of_analyzable_size_are_analyzed():
    state = {"fc.weight": torch.zeros(50, 30), "fc.bias": torch.zeros(50), "conv.weight": torch.zeros(16, 3, 3, 3),
             "experts": torch.zeros(4, 50, 50), "blocks": torch.zeros(60, 60, dtype=torch.uint8),
             "head.weight": torch.zeros(2, 50)}
    matrices = checkpoint_matrices(state)
    assert {name: m.shape for name, m in matrices.items()} == {"fc": (50, 30), "conv": (16, 27)}
    assert list(checkpoint_matrices(state, match="^conv")) == ["conv"]


def test_the_verdict_line_does_not_deny_listed_traps():
    import pandas as pd

    from grokutils.tools.watch import summary

    quiet = pd.DataFrame({"step": [0, 0], "layer": ["a", "b"], "alpha": [3.0, 2.5], "traps": [16, 0],
                          "alarm": [False, False], "reason": ["", ""]})
    line = summary(quiet)
    assert line.startswith("no alarm") and "16 correlation trap(s) listed above, not alarmed" in line
    assert "no traps" not in line and "no correlation traps" not in line
    assert summary(quiet.assign(traps=[0, 0])).endswith("; no correlation traps")


def test_a_matrix_trap_count_does_not_depend_on_the_other_matrices_watched(tmp_path):
    """Issue 32: weightwatcher shuffles every matrix from one generator, in order; analyzed
    together with three others, the last matrix used to get 14 traps, and 16 alone."""
    def heavy_tailed(seed: int) -> torch.Tensor:
        return torch.from_numpy(np.random.default_rng(seed).standard_t(1.5, (200, 100)) / 10).float()

    state = {"m0.weight": heavy_tailed(0), "m1.weight": heavy_tailed(1), "m2.weight": heavy_tailed(2),
             "target.weight": heavy_tailed(43)}
    save_file(state, tmp_path / "step_5.safetensors")
    together = watch(tmp_path / "step_5.safetensors").set_index("layer")
    alone = watch(tmp_path / "step_5.safetensors", match="^target").set_index("layer")
    assert together.loc["target", "traps"] == alone.loc["target", "traps"]
    assert together.loc["target", "alpha"] == alone.loc["target", "alpha"]
