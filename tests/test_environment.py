"""The install: pyproject.toml and environment.yml agree, and the key imports work."""
from __future__ import annotations

import importlib

import pytest
import tomllib
import yaml

from grokutils.paths import REPO_ROOT


def _pyproject_requirements() -> list[str]:
    with open(REPO_ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["dependencies"]


def _environment_pip_requirements() -> list[str]:
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    return [line for line in pip_section if not line.startswith("-")]


def test_environment_yml_mirrors_pyproject():
    """Same requirement strings, same order: environment.yml is a copy, never a fork."""
    assert _environment_pip_requirements() == _pyproject_requirements()


def test_environment_yml_installs_the_project():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert "--editable ." in pip_section


@pytest.mark.parametrize("module", ["torch", "torchvision", "weightwatcher", "papermill", "nbval", "mlxtend",
                                    "jupyterlab_myst", "selenium"])
def test_dependency_imports(module):
    importlib.import_module(module)


def test_jupyterlab_renders_myst_and_tests_drive_a_browser():
    """MyST ({cite}, {glue:text}, admonitions) renders in JupyterLab only with jupyterlab-myst;
    the JupyterLab test drives Chromium with selenium (issue 22)."""
    names = {requirement.split(">")[0].split("=")[0].split("<")[0] for requirement in _pyproject_requirements()}
    assert {"jupyterlab-myst", "selenium"} <= names


def test_jupyterlab_myst_is_enabled_in_this_lab():
    import json
    import subprocess
    import sys

    listing = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list", "--json"],
                             capture_output=True, text=True, timeout=120)
    if listing.returncode != 0:  # older JupyterLab without --json: read the plain listing
        listing = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"],
                                 capture_output=True, text=True, timeout=120)
        assert "jupyterlab-myst" in listing.stdout + listing.stderr
        return
    assert "jupyterlab-myst" in json.dumps(json.loads(listing.stdout))


def test_weightwatcher_is_the_papers_version():
    from grokutils.htsr import import_weightwatcher

    assert import_weightwatcher().__version__ == "0.7.5.5"


def test_torchvision_works_with_this_torch():
    """The CPU-only torch wheel breaks the registry's torchvision; the install must avoid it."""
    import torch
    import torchvision

    image = torch.zeros(1, 3, 8, 8)
    assert torchvision.transforms.functional.hflip(image).shape == image.shape
    assert torchvision.ops.nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([1.0]), 0.5).tolist() == [0]
