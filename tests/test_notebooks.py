"""The notebooks as artifacts: committed outputs, clean parameters cells, papermill runs."""
from __future__ import annotations

import ast
import json
import re

import nbformat
import pytest

from grokutils.paths import REPO_ROOT
from grokutils.tools import execute

NOTEBOOKS = execute.notebooks_in_toc()
MACHINE_PATH = re.compile(r"(/root/|/tmp/|/home/|/Users/|/work/)")


def test_toc_lists_the_data_notebook():
    assert "00_data" in [path.stem for path in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_outputs_and_no_errors(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code"
    assert all(cell.execution_count is not None for cell in code), f"{path.name}: unexecuted cells"
    outputs = [out for cell in code for out in cell.outputs]
    assert outputs, f"{path.name}: no outputs committed"
    assert not [out for out in outputs if out.output_type == "error"], f"{path.name}: error output"
    leaked = MACHINE_PATH.search(json.dumps(outputs) + json.dumps(notebook.metadata))
    assert leaked is None, f"{path.name}: machine path in outputs or metadata: {leaked.group(0)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_holds_annotated_literals_only(path):
    notebook = nbformat.read(path, as_version=4)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: want exactly one cell tagged 'parameters'"
    for statement in ast.parse(tagged[0].source).body:
        assert isinstance(statement, ast.AnnAssign), f"{path.name}: not an annotated assignment"
        try:
            ast.literal_eval(statement.value)
        except ValueError:
            pytest.fail(f"{path.name}: parameter {ast.unparse(statement.target)} is not a literal")


def _is_prose(markdown: str) -> bool:
    """True if markdown holds at least one sentence outside headings and `(label)=` targets."""
    text = "\n".join(line for line in markdown.splitlines()
                     if not line.lstrip().startswith("#") and not re.fullmatch(r"\s*\(.+\)=\s*", line))
    return len(re.findall(r"[A-Za-z]+", text)) >= 3 and re.search(r"[.!?:](\s|$)", text) is not None


def code_cells_without_prose(cells: list) -> list[int]:
    """Indices of code cells not followed by a markdown cell with a sentence.

    A `parameters` cell directly followed by papermill's `injected-parameters` cell counts as one
    block with it: the prose then follows the injected cell.
    """
    missing = []
    for index, cell in enumerate(cells):
        following = cells[index + 1] if index + 1 < len(cells) else None
        if cell.cell_type != "code" or ("parameters" in cell.metadata.get("tags", []) and following is not None
                                        and "injected-parameters" in following.metadata.get("tags", [])):
            continue
        if following is None or following.cell_type != "markdown" or not _is_prose(following.source):
            missing.append(index)
    return missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_code_cell_is_followed_by_prose(path):
    missing = code_cells_without_prose(nbformat.read(path, as_version=4).cells)
    assert not missing, f"{path.name}: code cells {missing} are not followed by a markdown cell with a sentence"


def test_profiles_name_known_notebooks_and_parameters():
    for name in execute.available_profiles():
        execute.check_plan(execute.load_profile(name), NOTEBOOKS)


def test_unknown_profile_is_rejected_before_work():
    with pytest.raises(ValueError, match="unknown profile 'fast'; available: .*smoke"):
        execute.main(["--profile", "fast"])


def test_unknown_parameter_is_rejected_before_work():
    with pytest.raises(ValueError, match=r"profile sets \['steps'\] for 00_data"):
        execute.check_plan({"00_data": {"steps": 5}}, NOTEBOOKS)


MLP_NOTEBOOKS = ("01_mlp_grokking", "02_wd_control", "04_correlation_traps", "05_prototypes", "07_alarm",
                 "90_scorecard")


@pytest.mark.parametrize("name", MLP_NOTEBOOKS)
def test_notebooks_ask_runs_for_the_profiles_runs_and_declare_no_run_settings(name):
    """A run's settings live in its profile only (grokutils.runs), so no notebook can train a run
    another chapter does not show; each notebook declares `profile` and passes it to `runs`."""
    from grokutils.config import MLPConfig, ModAddConfig

    path = REPO_ROOT / "notebooks" / f"{name}.ipynb"
    fields = set(MLPConfig.__dataclass_fields__) | set(ModAddConfig.__dataclass_fields__)
    declared = execute.declared_parameters(path)
    assert "profile" in declared and not declared & fields, sorted(declared & fields)
    code = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"
                     and not {"parameters", "injected-parameters"} & set(cell.metadata.get("tags", [])))
    assert re.search(r"runs\.mlp\(.*profile", code) and "Config(" not in code


def test_a_profile_sets_each_run_once_and_refuses_unknown_fields(tmp_path):
    from grokutils import runs

    for name in runs.available_profiles():
        assert set(runs.read_profile(name)["runs"]) == {"mlp", "modadd"}, name
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs:\n  mlp: {steps: 10, learning_rate: 0.1}\n")
    with pytest.raises(ValueError, match=r"runs.mlp sets \['learning_rate'\], not fields of MLPConfig"):
        runs.mlp_config(0.0, bad)
    bad.write_text("mlp: {steps: 10}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown sections \['mlp'\]; accepted: \['runs', 'notebooks'\]"):
        runs.read_profile(bad)


def _refuse_execution(monkeypatch) -> None:
    """Make any notebook execution fail the test."""
    monkeypatch.setattr(execute, "execute_notebook", lambda *args, **kwargs: pytest.fail("a notebook ran"))


def test_unknown_command_line_parameter_is_rejected_before_work(monkeypatch):
    _refuse_execution(monkeypatch)
    with pytest.raises(ValueError, match=r"-p sets \['lrr'\] for 01_mlp_grokking, which declares no such"):
        execute.main(["--only", "01_mlp_grokking", "-p", "lrr", "1e-3"])


def test_command_line_parameters_are_typed_and_follow_the_profile(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(execute, "execute_notebook", lambda *args: calls.append(args))
    execute.main(["--profile", "smoke", "--only", "04_correlation_traps", "--output-dir", str(tmp_path),
                  "-p", "n_false_positive_draws", "20", "-p", "seed_shown", "1"])
    [(path, parameters, output)] = calls
    assert path.name == "04_correlation_traps.ipynb" and output == tmp_path / "04_correlation_traps.ipynb"
    assert parameters == {"profile": "smoke", "n_false_positive_draws": 20, "seed_shown": 1}


def test_readme_runs_notebooks_through_the_checked_path():
    """The README's example of a one-off run goes through `grokutils.tools.execute`, which refuses typos."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert "bin/papermill notebooks" not in readme
    assert "-m grokutils.tools.execute --only 01_mlp_grokking --output-dir" in readme


@pytest.mark.slow
def test_data_notebook_runs_with_overrides(tmp_path):
    """papermill with overridden parameters, into a temporary folder; outputs follow them."""
    import papermill

    out = tmp_path / "00_data.ipynb"
    papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "00_data.ipynb"), str(out),
                               parameters=dict(seed=3, n_per_class=20, train_fraction=0.5),
                               cwd=str(REPO_ROOT / "notebooks"), kernel_name="python3",
                               progress_bar=False)
    text = json.dumps([o for c in nbformat.read(out, as_version=4).cells
                       if c.cell_type == "code" for o in c.outputs])
    assert "train: 20/class, seed 3" in text
    assert "6384" in text  # round(0.5 * 113 * 113) training pairs


def _execute(name: str, out_dir, **parameters) -> str:
    """Run one notebook with papermill into `out_dir`; return its outputs as JSON text."""
    import papermill

    out = out_dir / f"{name}.ipynb"
    papermill.execute_notebook(str(REPO_ROOT / "notebooks" / f"{name}.ipynb"), str(out),
                               parameters=parameters, cwd=str(REPO_ROOT / "notebooks"),
                               kernel_name="python3", progress_bar=False)
    return json.dumps([o for c in nbformat.read(out, as_version=4).cells
                       if c.cell_type == "code" for o in c.outputs])


@pytest.mark.slow
def test_mlp_notebooks_run_with_reduced_steps_into_a_temporary_results_folder(tmp_path):
    """01 trains and measures a tiny run from scratch; 02 trains WD=0.01 and reuses 01's run.
    The tiny run is a profile of our own, passed as a path."""
    results, profile = tmp_path / "results", tmp_path / "tiny.yaml"
    profile.write_text("runs:\n  mlp: {steps: 25, n_seeds: 1, n_checkpoints: 4, device: cpu}\n")
    tiny = dict(profile=str(profile), results_dir=str(results))
    text01 = _execute("01_mlp_grokking", tmp_path, **tiny)
    assert "mlp-wd0-25steps-1seeds-" in text01 and "not reached" in text01
    text02 = _execute("02_wd_control", tmp_path, **tiny)
    assert "mlp-wd0.01-25steps-1seeds-" in text02
    assert sorted(path.name.split("-")[1] for path in results.iterdir()) == ["wd0", "wd0.01"]
