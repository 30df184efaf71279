# Two commands do everything on a fresh machine (see README.md):
#   make book   execute the notebooks with papermill (PROFILE=accelerated by default) into
#               _build/source and build the book from there; the committed notebooks are not touched
#   make test   unit tests, notebook regression tests (nbval), checks of the built book and a
#               JupyterLab session in headless Chromium, and the cluster launcher on a one-node Slurm
# Both create .venv and install the project into it when missing.
# make notebooks re-executes the committed notebooks in place (to commit new outputs).

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PROFILE ?= accelerated
INSTALLED := $(VENV)/.installed
# make book: the book's sources with freshly executed notebooks. Executing into the build, not
# over the committed notebooks, leaves a clean checkout clean (papermill's timings, widget ids).
BOOK_SOURCE := _build/source
# pip on this workplace warns about every package missing from a local mirror; drop that noise
PIP_NOISE := /is ignored: it is neither a file nor a directory/d

.PHONY: book test notebooks html install browser slurm clean

book: install
	rm -rf $(BOOK_SOURCE) && mkdir -p $(BOOK_SOURCE)/notebooks
	cp -R _config.yml _toc.yml book $(BOOK_SOURCE)/
	$(PYTHON) -m grokutils.tools.execute --profile $(PROFILE) --output-dir $(BOOK_SOURCE)/notebooks
	$(VENV)/bin/jupyter-book build $(BOOK_SOURCE) --path-output . -W -n --keep-going

test: install browser slurm html
	$(VENV)/bin/ruff check grokutils tests benchmarks
	$(VENV)/bin/ruff check notebooks --select F,I  # the chapters: unused names, import order
	$(PYTHON) -m pytest tests notebooks --nbval --nbval-current-env \
	    --sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --editable . 2>&1 | sed '$(PIP_NOISE)'
	$(PYTHON) -c "import torch, torchvision, weightwatcher, papermill, nbval"
	touch $@

# Headless Chromium renders the built book (tests/test_book.py) and, driven by chromium-driver
# through selenium, runs notebooks in JupyterLab (tests/test_lab.py). Debian packages.
browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "warning: chromium or chromium-driver is missing; the browser tests will fail" \
	    "(apt-get install chromium chromium-driver)"; fi; }

# A one-node Slurm cluster for tests/test_launch.py (tests/slurm_cluster.py starts it in a temporary
# folder): Debian's slurm-wlm and munge. Without root or apt-get those tests use submitit's local
# executor and say so.
slurm:
	@{ command -v slurmctld && command -v slurmd && command -v munged; } >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; \
	  else echo "warning: slurm-wlm or munge is missing; the Slurm tests will be skipped" \
	    "(apt-get install slurm-wlm munge)"; fi; }

# Maintainers: re-execute the committed notebooks in place, then commit them.
notebooks: install
	$(PYTHON) -m grokutils.tools.execute --profile $(PROFILE)

html: install
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

clean:
	rm -rf _build
