"""How the notebooks' pages look in the book, and the execution report.

* papermill's injected-parameters cell is removed from the pages (the `parameters` cell above it
  stays: it shows the defaults, and the execution report shows what the build passed);
* the thebe configuration script that sphinx-thebe adds is added once per page, not twice (a
  second `const THEBE_JS_URL` is a console error on every page);
* the `execution-report` directive renders a table of each notebook's last papermill execution
  (when it ended, its profile, how long it took, whether it ran to the end), read from the
  notebooks' own `papermill` metadata, since the book build itself executes nothing
  (`execute_notebooks: off`), so MyST-NB's `nb-exec-table` would stay empty.

Enabled from `_config.yml` under `sphinx: local_extensions:`.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

INJECTED_TAG = "injected-parameters"  # papermill's tag on the cell it writes after `parameters`
REMOVE_TAG = "remove-cell"  # MyST-NB leaves a cell with this tag out of the page
HEADERS = ("Chapter", "Profile", "Finished (UTC)", "Run time", "Status")


def remove_injected_cells(app: Sphinx, docname: str, source: list[str]) -> None:
    """Tag papermill's injected-parameters cell `remove-cell` in a notebook's source text."""
    if Path(app.env.doc2path(docname)).suffix != ".ipynb":
        return
    notebook = json.loads(source[0])
    changed = False
    for cell in notebook.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if INJECTED_TAG in tags and REMOVE_TAG not in tags:
            tags.append(REMOVE_TAG)
            changed = True
    if changed:
        source[0] = json.dumps(notebook)


def dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Drop repeated <script> entries (same file, same attributes and inline body) from a page;
    an inline script is registered once with filename None and once with '' (sphinx-thebe)."""
    scripts, seen = context.get("script_files"), set()
    if not scripts:
        return
    unique = []
    for script in scripts:
        key = (getattr(script, "filename", str(script)) or "", repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


NO_PROFILE = "none (own parameters)"  # a chapter that reads no profile: 00 and 06 take their settings as parameters


def execution_record(path: Path) -> dict:
    """The papermill record of one notebook: profile, end time, duration, status ({} if none)."""
    meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("papermill")
    if not meta:
        return {}
    parameters = meta.get("parameters") or {}
    profile = parameters.get("profile", NO_PROFILE)
    end = meta.get("end_time")
    finished = datetime.fromisoformat(end).strftime("%Y-%m-%d %H:%M") if end else "-"
    duration = meta.get("duration")
    run_time = "-" if duration is None else (f"{duration:.0f} s" if duration < 120 else f"{duration / 60:.1f} min")
    status = "failed" if meta.get("exception") else ("ran to the end" if end else "not finished")
    return {"Profile": str(profile), "Finished (UTC)": finished, "Run time": run_time, "Status": status}


def _entry(*children: nodes.Node) -> nodes.entry:
    paragraph = nodes.paragraph()
    paragraph.extend(children)
    return nodes.entry("", paragraph)


class ExecutionReport(SphinxDirective):
    """`{execution-report}`: one row per notebook of the book, from its papermill metadata."""

    def run(self) -> list[nodes.Node]:
        docnames = sorted(name for name in self.env.found_docs if Path(self.env.doc2path(name)).suffix == ".ipynb")
        table = nodes.table(classes=["colwidths-auto"])
        group = nodes.tgroup(cols=len(HEADERS))
        table += group
        group.extend(nodes.colspec(colwidth=1) for _ in HEADERS)
        head, body = nodes.thead(), nodes.tbody()
        group += head
        group += body
        head += nodes.row("", *(_entry(nodes.Text(name)) for name in HEADERS))
        for docname in docnames:
            path = self.env.doc2path(docname)
            self.env.note_dependency(str(path))
            record = execution_record(Path(path))
            link = pending_xref(refdoc=self.env.docname, reftarget="/" + docname, reftype="doc", refdomain="std",
                                refexplicit=False, refwarn=True)
            link += nodes.literal(text=Path(docname).name)
            cells = [_entry(link)] + [_entry(nodes.Text(record.get(name, "-"))) for name in HEADERS[1:]]
            body += nodes.row("", *cells)
        return [table]


def setup(app: Sphinx) -> dict:
    """Register the handlers and the directive."""
    app.connect("source-read", remove_injected_cells)
    app.connect("html-page-context", dedupe_scripts)
    app.add_directive("execution-report", ExecutionReport)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
