"""The notebooks as artifacts: committed outputs, clean parameters cells, papermill runs."""
from __future__ import annotations

import ast
import json
import re

import nbformat
import pytest

from grokutils import execute
from grokutils.paths import REPO_ROOT

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


def test_profiles_name_known_notebooks_and_parameters():
    for name in execute.available_profiles():
        execute.check_plan(execute.load_profile(name), NOTEBOOKS)


def test_unknown_profile_is_rejected_before_work():
    with pytest.raises(ValueError, match="unknown profile 'fast'; available: .*smoke"):
        execute.main(["--profile", "fast"])


def test_unknown_parameter_is_rejected_before_work():
    with pytest.raises(ValueError, match=r"profile sets \['steps'\] for 00_data"):
        execute.check_plan({"00_data": {"steps": 5}}, NOTEBOOKS)


def _parameters_and_config_call(name: str) -> tuple[dict, set[str]]:
    """A notebook's declared parameter defaults, and the keywords of the config built after them."""
    cells = [cell for cell in nbformat.read(REPO_ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells
             if cell.cell_type == "code"]
    index = next(i for i, cell in enumerate(cells) if "parameters" in cell.metadata.get("tags", []))
    defaults = {ast.unparse(s.target): ast.literal_eval(s.value) for s in ast.parse(cells[index].source).body}
    body = next(cell for cell in cells[index + 1:] if "injected-parameters" not in cell.metadata.get("tags", []))
    calls = [node for node in ast.walk(ast.parse(body.source))
             if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("Config")]
    return defaults, {keyword.arg for call in calls for keyword in call.keywords}


def test_mlp_notebook_declares_and_passes_the_training_settings():
    """lr, dtype, batch_size, data_source: declared, at the paper's defaults, passed to MLPConfig."""
    from grokutils.train import MLPConfig

    defaults, passed = _parameters_and_config_call("01_mlp_grokking")
    for name in ("lr", "dtype", "batch_size", "data_source"):
        assert defaults.get(name) == getattr(MLPConfig(), name), name
    config_fields = set(MLPConfig.__dataclass_fields__)
    assert config_fields & set(defaults) <= passed, "declared but not passed to MLPConfig"


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
    execute.main(["--profile", "smoke", "--only", "01_mlp_grokking", "--output-dir", str(tmp_path),
                  "-p", "lr", "1e-3", "-p", "device", "cpu", "-p", "steps", "2000", "-p", "dtype", "float32"])
    [(path, parameters, output)] = calls
    assert path.name == "01_mlp_grokking.ipynb" and output == tmp_path / "01_mlp_grokking.ipynb"
    smoke = execute.load_profile("smoke")["01_mlp_grokking"]
    assert parameters == {**smoke, "lr": 0.001, "device": "cpu", "steps": 2000, "dtype": "float32"}


def test_readme_runs_notebooks_through_the_checked_path():
    """The README's example of a one-off run goes through `grokutils.execute`, which refuses typos."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert "bin/papermill notebooks" not in readme
    assert "-m grokutils.execute --only 01_mlp_grokking --output-dir" in readme


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
    """01 trains and measures a tiny run from scratch; 02 trains WD=0.01 and reuses 01's run."""
    results = tmp_path / "results"
    tiny = dict(steps=25, n_seeds=1, n_checkpoints=4, device="cpu", results_dir=str(results))
    text01 = _execute("01_mlp_grokking", tmp_path, **tiny)
    assert "mlp-wd0-25steps-1seeds-" in text01 and "not reached" in text01
    text02 = _execute("02_wd_control", tmp_path, **tiny)
    assert "mlp-wd0.01-25steps-1seeds-" in text02
    assert sorted(path.name.split("-")[1] for path in results.iterdir()) == ["wd0", "wd0.01"]
