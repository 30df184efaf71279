"""Checks of the built book in _build/html (`make test` builds it before pytest runs).

* every page is free of tracebacks and machine paths;
* math is served by the local MathJax copy, never a CDN;
* the data notebook's page shows its figures;
* headless Chromium, with every host name unresolvable (offline), renders pages that are not
  blank and typesets the math (`@pytest.mark.browser`).

Without a built book or without Chromium these tests skip, except on CI (the environment
variable CI set), where they fail. BOOK_HTML overrides the folder of the built book.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BOOK_HTML = Path(os.environ.get("BOOK_HTML", REPO_ROOT / "_build" / "html"))
DATA_PAGE = "notebooks/00_data.html"  # the first notebook of the Reproduction part
MATH_PAGE = "book/background.html"  # the chapter with the most equations
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_TIMEOUT_S = 120
WINDOW = (1200, 1600)  # width, height of the screenshots in pixels
# A machine path: /root/, /tmp/, /home/, /Users/, /work/ not preceded by a host or word
# character (so https://host/work/ is fine, file:///tmp/x and "/work/main" are not).
MACHINE_PATH = re.compile(r"(?<![\w.\-])/(?:root|tmp|home|Users|work)/")
TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'class="output traceback')
# Where MathJax is fetched from when a book is not built for offline use.
MATHJAX_CDN = re.compile(r"https?://[^\"'\s>]*(?:mathjax|polyfill)", re.IGNORECASE)


def _missing(reason: str) -> None:
    """Skip with `reason` on a workstation; fail on CI, where everything must be present."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error)")
    pytest.skip(reason)


# --- the built book -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def html_root() -> Path:
    """The folder of the built book; skips (or fails on CI) when it was not built."""
    if not (BOOK_HTML / "index.html").is_file():
        _missing(f"the book is not built in {BOOK_HTML}; run `make html`")
    return BOOK_HTML


def book_pages(root: Path) -> list[Path]:
    """Every HTML page of the book, without the copied theme and MathJax assets."""
    return sorted(path for path in root.rglob("*.html") if "_static" not in path.relative_to(root).parts)


class _TagCollector(HTMLParser):
    """Collects the attributes of every <img> and <script> tag of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict] = []
        self.scripts: list[dict] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "script":
            self.scripts.append(dict(attrs))


def parse_tags(page: Path) -> _TagCollector:
    """The <img> and <script> tags of one page."""
    collector = _TagCollector()
    collector.feed(page.read_text(encoding="utf-8"))
    return collector


def local_target(page: Path, url: str) -> Path | None:
    """The file a relative URL of `page` points to, or None for remote and data URLs."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    return (page.parent / unquote(parts.path)).resolve()


def redirect_target(page: Path) -> Path:
    """Follow a `<meta http-equiv="Refresh">` page (the root index.html) to the real page."""
    match = re.search(r'http-equiv="Refresh"\s+content="\d+;\s*url=([^"]+)"', page.read_text(), re.I)
    return (page.parent / match.group(1)).resolve() if match else page


def test_book_has_pages(html_root):
    pages = {path.relative_to(html_root).as_posix() for path in book_pages(html_root)}
    assert {"index.html", DATA_PAGE, MATH_PAGE} <= pages, sorted(pages)


def test_no_page_shows_a_traceback(html_root):
    offenders = [
        f"{page.relative_to(html_root)}: {marker!r}"
        for page in book_pages(html_root)
        for marker in TRACEBACK_MARKERS
        if marker in page.read_text(encoding="utf-8")
    ]
    assert not offenders, "pages with tracebacks:\n" + "\n".join(offenders)


def test_no_page_leaks_a_machine_path(html_root):
    offenders = []
    for page in book_pages(html_root):
        text = page.read_text(encoding="utf-8")
        for match in MACHINE_PATH.finditer(text):
            context = text[max(0, match.start() - 60) : match.end() + 60].replace("\n", " ")
            offenders.append(f"{page.relative_to(html_root)}: ...{context}...")
    assert not offenders, "machine paths in the built book:\n" + "\n".join(offenders[:20])


def test_math_pages_use_the_local_mathjax(html_root):
    pages = book_pages(html_root)
    math_pages = [page for page in pages if 'class="math' in page.read_text(encoding="utf-8")]
    assert html_root / MATH_PAGE in math_pages, f"{MATH_PAGE} shows no math"
    for page in math_pages:
        sources = [tag.get("src") or "" for tag in parse_tags(page).scripts]
        mathjax = [src for src in sources if "mathjax" in src.lower()]
        assert mathjax, f"{page.relative_to(html_root)} has math but loads no MathJax"
        for src in mathjax:
            target = local_target(page, src)
            assert target is not None, f"{page.relative_to(html_root)} loads MathJax from {src}"
            assert target.is_file() and target.stat().st_size > 100_000, f"{src}: missing or truncated"
    for page in pages:
        cdn = MATHJAX_CDN.search(page.read_text(encoding="utf-8"))
        assert cdn is None, f"{page.relative_to(html_root)} references {cdn.group(0)}"


def broken_images(page: Path) -> list[str]:
    """The <img> sources of `page` that are remote, tiny inline, missing or empty files."""
    broken = []
    for image in parse_tags(page).images:
        src = image.get("src", "")
        if src.startswith("data:"):
            if len(src) < 200:
                broken.append(f"{src[:40]}... (tiny inline image)")
            continue
        target = local_target(page, src)
        if target is None:
            broken.append(f"{src} (remote)")
        elif not target.is_file() or target.stat().st_size == 0:
            broken.append(f"{src} (missing or empty)")
    return broken


def test_data_page_shows_its_figures(html_root):
    page = html_root / DATA_PAGE
    assert parse_tags(page).images, f"{DATA_PAGE} has no <img> tag"
    assert not broken_images(page), f"{DATA_PAGE}: {broken_images(page)}"


def test_every_image_of_the_book_exists(html_root):
    broken = {page.relative_to(html_root).as_posix(): found
              for page in book_pages(html_root) if (found := broken_images(page))}
    assert not broken, f"broken images: {broken}"


# --- headless Chromium --------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of the Chromium executable; skips (or fails on CI) when it is not installed."""
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    _missing("headless Chromium is not installed (make browser, or apt-get install chromium)")


def run_chromium(executable: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium in a throw-away profile with every host name unresolvable (offline)."""
    command = [
        executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
        "--virtual-time-budget=10000", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S,
                          check=False)


def screenshot(executable: str, page: Path, folder: Path) -> Path:
    """A PNG of the top of `page` rendered at WINDOW size."""
    png = folder / f"{page.stem}.png"
    result = run_chromium(executable, folder / "profile", f"--screenshot={png}",
                          f"--window-size={WINDOW[0]},{WINDOW[1]}", page.as_uri())
    assert png.is_file(), f"Chromium wrote no screenshot of {page.name}: {result.stderr[-2000:]}"
    return png


def assert_not_blank(png: Path) -> None:
    """A rendered page has many colours and a fair share of non-white pixels."""
    from PIL import Image

    with Image.open(png) as image:
        rgb = image.convert("RGB")
    colours = rgb.getcolors(maxcolors=rgb.width * rgb.height)
    non_white = sum(count for count, colour in colours if min(colour) < 235)
    assert len(colours) > 50, f"{png.name}: only {len(colours)} distinct colours"
    assert non_white > 0.01 * rgb.width * rgb.height, f"{png.name}: almost entirely white"


@pytest.mark.browser
@pytest.mark.parametrize("relative", ["index.html", DATA_PAGE, MATH_PAGE])
def test_page_renders_in_chromium(html_root, chromium, tmp_path, relative):
    page = redirect_target(html_root / relative)
    assert page.is_file(), f"{relative} leads to a missing page {page}"
    assert_not_blank(screenshot(chromium, page, tmp_path))


@pytest.mark.browser
def test_math_is_typeset_offline(html_root, chromium, tmp_path):
    page = html_root / MATH_PAGE
    result = run_chromium(chromium, tmp_path / "profile", "--dump-dom", page.as_uri())
    dom = result.stdout
    source_math = page.read_text(encoding="utf-8").count('class="math')
    typeset = dom.count("<mjx-container")
    assert source_math > 0
    assert typeset >= source_math, (
        f"MathJax typeset {typeset} of {source_math} formulas in {MATH_PAGE} without a network"
    )
    assert "<mjx-merror" not in dom, f"MathJax reported a TeX error in {MATH_PAGE}"


# --- issue 22: pages without plumbing, scripts or console errors; the execution report ---------

EXECUTION_PAGE = "book/execution.html"
NOTEBOOK_PAGES = "notebooks/*.html"


def test_no_page_shows_papermills_injected_parameters_cell(html_root):
    pages = sorted(html_root.glob(NOTEBOOK_PAGES))
    assert pages
    shown = [page.name for page in pages if "tag_injected-parameters" in page.read_text(encoding="utf-8")
             or "# Parameters</span>" in page.read_text(encoding="utf-8")]
    assert not shown, f"pages showing papermill's injected-parameters cell: {shown}"


def test_pages_load_no_script_from_the_network(html_root):
    remote = {}
    for page in book_pages(html_root):
        sources = [tag.get("src") for tag in parse_tags(page).scripts if tag.get("src")]
        if found := [src for src in sources if local_target(page, src) is None]:
            remote[page.relative_to(html_root).as_posix()] = found
    assert not remote, f"scripts loaded from the network: {remote}"


def test_each_inline_script_appears_once_per_page(html_root):
    repeated = {}
    for page in book_pages(html_root):
        bodies = re.findall(r"<script>(.*?)</script>", page.read_text(encoding="utf-8"), re.S)
        if twice := sorted({body[:60] for body in bodies if bodies.count(body) > 1 and "const " in body}):
            repeated[page.relative_to(html_root).as_posix()] = twice
    assert not repeated, f"inline scripts declaring constants twice: {repeated}"


def test_a_chapter_without_a_profile_says_so_in_the_report(tmp_path):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("notebook_pages", REPO_ROOT / "book" / "_ext" / "notebook_pages.py")
    pages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pages)
    notebook = tmp_path / "nb.ipynb"
    record = {"parameters": {"seed": 0}, "end_time": "2026-12-06T10:00:00", "duration": 42.0, "exception": None}
    notebook.write_text(json.dumps({"metadata": {"papermill": record}}))
    assert pages.execution_record(notebook)["Profile"] == "none (own parameters)"
    record["parameters"]["profile"] = "smoke"
    notebook.write_text(json.dumps({"metadata": {"papermill": record}}))
    assert pages.execution_record(notebook) == {"Profile": "smoke", "Finished (UTC)": "2026-12-06 10:00",
                                                "Run time": "42 s", "Status": "ran to the end"}


def test_execution_report_lists_every_notebook(html_root):
    page = html_root / EXECUTION_PAGE
    assert page.is_file(), f"{EXECUTION_PAGE} is missing"
    html = page.read_text(encoding="utf-8")
    statuses = re.findall(r"<td><p>(ran to the end|failed|not finished)</p></td>", html)
    assert len(statuses) == len(sorted(html_root.glob(NOTEBOOK_PAGES))), statuses
    text = re.sub(r"<[^>]+>", " ", html)
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", text) and re.search(r"\d+ s|\d+\.\d min", text)


def selenium_chromium(chromium: str, window: tuple[int, int] = WINDOW):
    """Headless Chromium under selenium (chromium-driver), every host unresolvable."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver") or shutil.which("chromedriver", path="/usr/lib/chromium")
    if driver_path is None:
        _missing("chromium-driver is not installed (make browser, or apt-get install chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={window[0]},{window[1]}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(CHROMIUM_TIMEOUT_S)
    return driver


READING_WINDOW = (1440, 1000)  # a laptop's browser window, both of the book's sidebars shown
# Per page: each image's address, natural width and width shown, and each table's width against
# its container's (CSS pixels), as laid out in READING_WINDOW.
LAYOUT_JS = """const article = document.querySelector('.bd-article');
if (!article) return {images: [], tables: []};  // a redirect, the search page
return {images: Array.from(article.querySelectorAll('img')).map(
            image => [image.src, image.naturalWidth, image.getBoundingClientRect().width]),
        tables: Array.from(article.querySelectorAll('table')).map(
            table => [table.scrollWidth, table.parentElement.clientWidth, table.innerText.slice(0, 60)])};"""


@pytest.fixture(scope="module")
def layout(html_root, chromium) -> dict[str, dict]:
    """Every page's images and tables as Chromium lays them out in READING_WINDOW."""
    driver = selenium_chromium(chromium, READING_WINDOW)
    try:
        measured = {}
        for page in book_pages(html_root):
            driver.get(page.as_uri())
            measured[page.relative_to(html_root).as_posix()] = driver.execute_script(LAYOUT_JS)
    finally:
        driver.quit()
    return measured


def shown_text(source: str, natural: int, shown: float) -> tuple[float, str] | None:
    """The smallest text of a figure as shown, in pixels, and that text, from the text record the
    notebooks write into each figure's PNG (`plots.common.figure_png`); None without a record."""
    from PIL import Image

    from grokutils.plots.common import TEXT_RECORD_KEY, shown_text_px

    path = Path(unquote(urlsplit(source).path))
    with Image.open(path) as image:
        text = getattr(image, "text", {}).get(TEXT_RECORD_KEY)
    if text is None:
        return None
    record = json.loads(text)
    return shown_text_px(record["points"], record["dpi"], shown / natural), record["text"]


@pytest.mark.browser
def test_every_figure_shows_its_text_at_least_9_px_tall(layout):
    """Issue 32: each figure's smallest text (tick labels, legends, the protocol stamp), as large as
    Chromium shows it in a 1,440-px window: its font size and dpi recorded in the PNG, times the
    ratio of the width shown to the image's own width."""
    from grokutils.plots.common import MIN_TEXT_PX

    small, unrecorded = {}, []
    for page, found in layout.items():
        for source, natural, shown in found["images"]:
            if "/_images/" not in source or not natural:
                continue  # not a notebook's output (the theme's logo)
            measured = shown_text(source, natural, shown)
            if measured is None:
                unrecorded.append(f"{page}: {source.rsplit('/', 1)[-1]}")
            elif measured[0] < MIN_TEXT_PX - 0.05:
                small[f"{page}: {source.rsplit('/', 1)[-1][:16]}"] = (round(measured[0], 1), measured[1])
    assert not unrecorded, f"figures not shown through plots.common.setup (no text record): {unrecorded}"
    assert not small, f"text under {MIN_TEXT_PX} px (px, text): {small}"


@pytest.mark.browser
def test_every_table_fits_its_column(layout):
    """Issue 32: no table is wider than the column it sits in (no hidden, scrolled-to columns)."""
    wide = {f"{page}: {text!r}": (width, column) for page, found in layout.items()
            for width, column, text in found["tables"] if width > column + 1}
    assert not wide, f"tables wider than their column (width, column px): {wide}"


@pytest.mark.browser
def test_pages_log_no_console_errors_offline(html_root, chromium):
    """Every page in headless Chromium (selenium, chromium-driver), every host unresolvable:
    nothing in the console at level SEVERE (a failed CDN load, a script error)."""
    driver = selenium_chromium(chromium)
    errors = {}
    try:
        for page in book_pages(html_root):
            driver.get(page.as_uri())
            driver.execute_script("return document.readyState")
            found = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
            if found:
                errors[page.relative_to(html_root).as_posix()] = found
    finally:
        driver.quit()
    assert not errors, f"console errors: {errors}"


def test_make_book_executes_into_the_build_not_over_the_committed_notebooks():
    """`make book` in a clean checkout leaves `git status` clean: papermill writes the executed
    notebooks under _build/, and the book is built from there."""
    dry_run = subprocess.run(["make", "-n", "book"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                             check=True).stdout
    [execute] = [line for line in dry_run.splitlines() if "grokutils.tools.execute" in line]
    assert re.search(r"--output-dir _build/\S+", execute), execute
    [build] = [line for line in dry_run.splitlines() if "jupyter-book build" in line]
    assert re.search(r"jupyter-book build _build/\S+ ", build), build
