"""The notebooks as a reader opens them: JupyterLab in headless Chromium (issue 22).

One JupyterLab server on 127.0.0.1 (a free port, a token, settings and workspaces in a
temporary folder, `--allow-root` as root) serves copies of the notebooks, so nothing committed
is touched; selenium drives Debian's chromium through chromium-driver. The test

* opens notebook 05: the kernel starts and the notebook is not marked modified; the markdown
  cells' MyST (`(label)=` targets, `{cite}` roles, admonitions) is rendered by jupyterlab-myst,
  not shown as raw text;
* runs all of 05's cells: no error output; the explorer renders as a slider, and moving the
  slider redraws the figure;
* opens notebook 00 and runs it: no error output;
* opens every other notebook: none is marked modified once its kernel is idle;
* in none does jupyterlab-myst log an error (a cross-reference to another page, which it cannot
  resolve: chapters link to each other with plain links to the files);
* 05 starts with the note that the text shows glue names, and its last cell lists them with
  their values (`grokutils.glue.quoted_values`).

Every wait is bounded (LAB_TIMEOUT_S in all), the server is stopped at the end, and a failure
leaves screenshots and the server's log in `_build/test-lab/` (printed in the message).
Without chromium, chromium-driver or selenium the test skips, except on CI (CI set), where it
fails.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grokutils.plots.common import BATCH_VARIABLE

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "_build" / "test-lab"  # screenshots and server log of a failed run
CHROMIUM_NAMES = ("chromium", "chromium-browser")
DRIVER_NAMES = ("chromedriver", "chromium-driver")
LAB_TIMEOUT_S = 600  # the whole test: Lab start, both notebooks run, on a busy 2-core machine
START_TIMEOUT_S = 90  # the server answers, the page shows the app, a kernel is idle
RUN_TIMEOUT_S = 300  # one notebook's Run All
WINDOW = (1400, 1000)
# MyST as raw text: what a markdown cell shows where jupyterlab-myst does not render it.
RAW_MYST = ("{cite}`", "{cite:p}`", "{cite:t}`", "{glue:text}`", "{glue}`", "{doc}`", "{ref}`", ":::{", "```{")
LABEL_TARGET = re.compile(r"^\s*\([\w-]+\)=", re.MULTILINE)
CITED_KEY = "prakash2026antigrokking"  # cited with {cite} in 05's first cell, which also quotes a glued name

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _missing(reason: str) -> None:
    """Skip with `reason` on a workstation; fail on CI, where everything must be present."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error)")
    pytest.skip(reason)


def _which(names: tuple[str, ...]) -> str | None:
    """The first of `names` on PATH (or in /usr/lib/chromium, where Debian puts its driver)."""
    for name in names:
        if found := shutil.which(name) or shutil.which(name, path="/usr/lib/chromium"):
            return found
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.5):
    """Poll `condition()` until it returns a true value; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over copies of the notebooks: yields (url, token, folder); stopped after."""
    if _which(CHROMIUM_NAMES) is None or _which(DRIVER_NAMES) is None:
        _missing("chromium and chromium-driver are needed (make browser, or apt-get install chromium "
                 "chromium-driver)")
    pytest.importorskip("selenium")
    home = tmp_path_factory.mktemp("lab")
    shutil.copytree(REPO_ROOT / "notebooks", home / "notebooks",
                    ignore=shutil.ignore_patterns(".*", "*.running.ipynb"))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**{key: value for key, value in os.environ.items() if key != BATCH_VARIABLE},  # a live frontend
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               f"--ServerApp.root_dir={home}", f"--IdentityProvider.token={token}",
               "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=", "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log_path = home / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _answers(url, token) or server.poll() is not None, START_TIMEOUT_S, "JupyterLab to start")
        assert server.poll() is None, f"JupyterLab exited with {server.returncode}:\n{log_path.read_text()[-3000:]}"
        yield url, token, home
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=20)


def _answers(url: str, token: str) -> bool:
    """True once the server answers its API."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def browser(lab):
    """Headless Chromium driven by chromium-driver; quits after the module."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _which(CHROMIUM_NAMES)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}", "--disable-background-networking",
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # jupyterlab-myst's errors
    driver = webdriver.Chrome(service=Service(_which(DRIVER_NAMES)), options=options)
    driver.set_script_timeout(RUN_TIMEOUT_S)
    driver.set_page_load_timeout(START_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.contextmanager
def screenshots_on_failure(browser, lab):
    """On any failure inside: a screenshot and the server's log into ARTIFACTS, named in the error."""
    try:
        yield
    except BaseException as err:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "failure.png"))
        shutil.copy(lab[2] / "server.log", ARTIFACTS / "server.log")
        raise AssertionError(f"{err}\n(screenshot and JupyterLab's log in {ARTIFACTS})") from err


# JavaScript run in the page; `window.jupyterapp` exists because of expose_app_in_browser.
PANEL = "const app = window.jupyterapp; const panel = app && app.shell.currentWidget;"
NOTEBOOK_STATE = PANEL + """
if (!panel || !panel.content || !panel.content.model || !panel.sessionContext.session) return null;
const kernel = panel.sessionContext.session.kernel;
const cells = []; const model = panel.content.model;
for (let i = 0; i < model.cells.length; i++) {
  const cell = model.cells.get(i);
  if (cell.type !== 'code') continue;
  const outputs = cell.outputs.toJSON();
  cells.push({count: cell.executionCount, errors: outputs.filter(o => o.output_type === 'error')
              .map(o => o.ename + ': ' + o.evalue)});
}
return {path: panel.context.path, dirty: panel.context.model.dirty, kernel: kernel && kernel.status,
        ready: panel.context.isReady, cells: cells};
"""


def _open(browser, url: str, token: str, path: str) -> dict:
    """Open notebook `path` in JupyterLab; return its state once its kernel is idle."""
    browser.get(f"{url}/lab/tree/{path}?token={token}")

    def opened():
        state = browser.execute_script(NOTEBOOK_STATE)
        return state if state and state["path"] == path and state["ready"] and state["kernel"] == "idle" else None

    _wait_for(opened, START_TIMEOUT_S, f"{path} to open with an idle kernel")
    time.sleep(3)  # the kernel's info reply updates the metadata after it turns idle
    return browser.execute_script(NOTEBOOK_STATE)


def _run_all(browser, path: str) -> dict:
    """Run every cell of the open notebook; return its state when all code cells ran."""
    browser.execute_script(PANEL + "app.commands.execute('notebook:run-all-cells');")

    def finished():
        state = browser.execute_script(NOTEBOOK_STATE)
        done = state and state["kernel"] == "idle" and all(cell["count"] is not None for cell in state["cells"])
        errors = state and [error for cell in state["cells"] for error in cell["errors"]]
        return state if done or errors else None

    return _wait_for(finished, RUN_TIMEOUT_S, f"Run All of {path}", poll_s=2)


def _markdown_cells(browser) -> list[dict]:
    """Each rendered markdown cell: rendered by jupyterlab-myst (class `myst`) or not, and its text
    (Lab's own renderer writes `.jp-RenderedMarkdown`)."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('.jp-MarkdownCell .myst, .jp-MarkdownCell .jp-RenderedMarkdown'))"
        ".map(node => ({myst: node.classList.contains('myst'), text: node.textContent, html: node.innerHTML}));")


def _raw_myst(cells: list[dict]) -> list[str]:
    """The cells that show MyST markup as text: a role, a directive fence or a `(label)=` target."""
    return [cell["text"][:120] for cell in cells
            if any(marker in cell["text"] for marker in RAW_MYST) or LABEL_TARGET.search(cell["text"])]


def _myst_errors(browser) -> list[str]:
    """jupyterlab-myst's errors logged in the console since the last call (a cross-reference target
    not found, an unknown role)."""
    return [entry["message"].split('"', 1)[-1][:200] for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and "jupyterlab-myst" in entry["message"]]


def _last_output_text(browser) -> str:
    """The text of the open notebook's last code cell's outputs, from the notebook's model."""
    return browser.execute_script(PANEL + """
const model = panel.content.model; let text = '';
for (let i = model.cells.length - 1; i >= 0; i--) {
  const cell = model.cells.get(i);
  if (cell.type !== 'code') continue;
  for (const output of cell.outputs.toJSON()) text += (output.data && output.data['text/plain']) || '';
  break;
}
return text;""")


def _explorer_image(browser) -> str | None:
    """The `src` of the figure inside the explorer widget's output, or None."""
    return browser.execute_script(
        "const img = document.querySelector('.widget-vbox .widget-output img');"
        "return img ? img.getAttribute('src') : null;")


def test_prototypes_and_data_notebooks_run_in_jupyterlab(lab, browser):
    started = time.monotonic()
    with screenshots_on_failure(browser, lab):
        _check_notebooks(lab, browser)
    assert time.monotonic() - started < LAB_TIMEOUT_S


def _check_notebooks(lab, browser) -> None:
    """Open and run 05 (clean open, MyST rendered, no errors, a live slider), then 00."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, token, _ = lab
    path = "notebooks/05_prototypes.ipynb"
    state = _open(browser, url, token, path)
    assert not state["dirty"], f"{path} is marked modified right after opening (kernel spec or metadata)"
    cells = _markdown_cells(browser)
    assert cells and all(cell["myst"] for cell in cells), f"{path}: markdown not rendered by jupyterlab-myst"
    assert not _raw_myst(cells), f"markdown cells of {path} show MyST as raw text: {_raw_myst(cells)}"
    assert CITED_KEY in cells[0]["text"] and "glue" not in cells[0]["text"], cells[0]["text"][:400]
    # the text shows glue names: a note says so, and the last cell lists each with its value
    assert "shows as the name it is glued under" in cells[1]["text"], cells[1]["text"][:400]
    assert "top_k" in _last_output_text(browser), _last_output_text(browser)[:400]
    myst_errors = {"05_prototypes.ipynb": _myst_errors(browser)}

    state = _run_all(browser, path)
    errors = [error for cell in state["cells"] for error in cell["errors"]]
    assert not errors, f"{path}: error outputs {errors}"
    handle = _wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".widget-vbox .widget-slider .noUi-handle"),
                       60, "the explorer's slider to render")[0]
    before = _wait_for(lambda: _explorer_image(browser), 60, "the explorer's figure")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", handle)
    handle.send_keys(Keys.ARROW_LEFT)
    after = _wait_for(lambda: (image := _explorer_image(browser)) != before and image, 60,
                      "the explorer's figure to change after the slider moved")
    assert after != before

    path = "notebooks/00_data.ipynb"
    state = _open(browser, url, token, path)
    assert not state["dirty"], f"{path} is marked modified right after opening"
    state = _run_all(browser, path)
    errors = [error for cell in state["cells"] for error in cell["errors"]]
    assert not errors, f"{path}: error outputs {errors}"

    myst_errors["00_data.ipynb"] = _myst_errors(browser)

    opened_dirty = []
    for notebook in sorted((REPO_ROOT / "notebooks").glob("[0-9]*.ipynb")):
        path = f"notebooks/{notebook.name}"
        if path not in ("notebooks/05_prototypes.ipynb", "notebooks/00_data.ipynb"):
            if _open(browser, url, token, path)["dirty"]:
                opened_dirty.append(notebook.name)
            myst_errors[notebook.name] = _myst_errors(browser)
            browser.execute_script(PANEL + "panel.sessionContext.shutdown().then(() => panel.dispose());")
    assert not opened_dirty, f"marked modified right after opening: {opened_dirty}"
    myst_errors = {name: sorted(set(errors)) for name, errors in myst_errors.items() if errors}
    assert not myst_errors, f"jupyterlab-myst errors in the console (a reference it cannot resolve): {myst_errors}"
