# Two commands do everything on a fresh machine (see README.md):
#   make book   execute the notebooks with papermill (PROFILE=accelerated by default) and build the book
#   make test   unit tests, notebook regression tests (nbval) and checks of the built book
# Both create .venv and install the project into it when missing.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PROFILE ?= accelerated
INSTALLED := $(VENV)/.installed
# pip on this workplace warns about every package missing from a local mirror; drop that noise
PIP_NOISE := /is ignored: it is neither a file nor a directory/d

.PHONY: book test notebooks html install browser clean

book: notebooks html

test: install browser html
	$(VENV)/bin/ruff check grokutils tests benchmarks
	$(PYTHON) -m pytest tests notebooks --nbval --nbval-current-env \
	    --sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --editable . 2>&1 | sed '$(PIP_NOISE)'
	$(PYTHON) -c "import torch, torchvision, weightwatcher, papermill, nbval"
	touch $@

# Headless Chromium renders the built book in tests/test_book.py (Debian package).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "warning: chromium is not installed; the browser test will fail (apt-get install chromium)"; fi; }

notebooks: install
	$(PYTHON) -m grokutils.tools.execute --profile $(PROFILE)

html: install
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

clean:
	rm -rf _build
