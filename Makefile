# Set up the venv, execute the notebooks with papermill, build the book, run the tests.
#
#   make book                 venv + install, execute notebooks/NN_*.py (preset cpu), build book/
#   make book PRESET=smoke    the same with tiny models (PRESET=gpu on a CUDA machine)
#   make publish              make book, then push book/_build/html to the gh-pages branch (DRY_RUN=1: push nothing)
#   make test                 venv + install, then pytest (unit tests, notebook smoke runs, book build)
#   make sync                 jupytext --sync every notebook pair and strip the .ipynb outputs
#   make clean                remove the built book and executed notebooks (keeps .venv, artifacts/)
#   make clean-artifacts NAME=model-3f2a9c01b7   remove one artifact folder (an error names the bad one)
#   make lab                  JupyterLab on notebooks/ with the venv's kernel (the .py/.ipynb pairs open as notebooks)
#
# The notebooks run with the kernel's working directory at notebooks/ (book/ for the findings
# notebook), as when opened in Jupyter. lib finds data/ and artifacts/ from its own location,
# so notebooks never need relative paths. A report is re-executed when its notebook, lib/, the
# preset or an earlier report changed; `make clean` forces a full re-run.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.NOTPARALLEL:

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PRESET ?= cpu
STAMP := $(VENV)/.installed

# Pretrained models load only from local files; never wait on the network.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# Several processes share few cores here (the kernel, papermill, a second job): libgomp's default
# spin-waiting then made a 2-thread training step up to 10x slower (bench/train_throughput.py).
export OMP_WAIT_POLICY ?= PASSIVE
# The inline backend must be used in the kernels, or figures vanish from the book.
unexport MPLBACKEND

NOTEBOOK_PY := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))
NOTEBOOK_IPYNB := $(NOTEBOOK_PY:.py=.ipynb)
EXECUTED := $(patsubst notebooks/%.py,book/executed/%.ipynb,$(NOTEBOOK_PY))
LIB_SRC := $(shell find lib -name '*.py')
PRESET_FILE := book/executed/.preset
EXECUTE := $(BIN)/python scripts/execute_notebook.py

# The findings notebook (the ledger of every claim) runs after all reports. Until it exists a
# placeholder page stands in for it, so the toc entry and the intro's link stay valid.
FINDINGS_PY := $(wildcard book/findings.py)
FINDINGS_SRC := $(if $(FINDINGS_PY),book/findings.ipynb,$(wildcard book/findings.ipynb))
FINDINGS_DEP := $(or $(FINDINGS_PY),$(FINDINGS_SRC))
FINDINGS_OUT := $(if $(FINDINGS_SRC),book/executed/findings.ipynb,book/executed/findings.md)

.PHONY: help install book publish test sync clean clean-artifacts lab FORCE

help:
	@sed -n '3,11p' Makefile | sed 's/^# \{0,1\}//'

# --- environment -------------------------------------------------------------------------
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned first in requirements.txt (2.13.0, the CPU build here). A CUDA build of
# 2.13.0 installed beforehand satisfies the pin and is kept. Nothing is registered globally:
# the `python3` kernel is the venv's own.
$(STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -r requirements.txt
	@# --no-build-isolation builds lib with the venv's setuptools (Python >= 3.12 venvs ship none).
	$(BIN)/python -c 'import setuptools' 2>/dev/null || $(BIN)/python -m pip install setuptools==84.2.1
	$(BIN)/python -m pip install -e . --no-deps --no-build-isolation
	touch $@

install: $(STAMP)

# --- notebooks ---------------------------------------------------------------------------
# The .py is the source of truth. Before a notebook runs, its .ipynb pair is refreshed from the
# .py if the pair is older (jupytext --update rewrites the inputs only; it leaves the .py's
# content alone and bumps its mtime, as jupytext wants the text file to be the newer one).
refresh = [ $(1:.py=.ipynb) -nt $(1) ] || $(BIN)/jupytext --to ipynb --update $(1)

# Records the preset; rewritten only when it changes, so a new preset re-executes everything.
$(PRESET_FILE): FORCE
	@mkdir -p $(@D)
	@[ "$$(cat $@ 2>/dev/null)" = "$(PRESET)" ] || echo "$(PRESET)" > $@

book/executed/%.ipynb: notebooks/%.py $(LIB_SRC) $(PRESET_FILE) | $(STAMP)
	$(call refresh,$<)
	$(EXECUTE) notebooks/$*.ipynb $@ -p preset $(PRESET) --cwd notebooks

# Numeric order: each report also depends on the one before it (later reports reuse its artifacts).
_prev_report :=
$(foreach e,$(EXECUTED),$(eval $(e): $(_prev_report))$(eval _prev_report := $(e)))

ifneq ($(FINDINGS_SRC),)
$(FINDINGS_OUT): $(FINDINGS_DEP) $(EXECUTED) $(LIB_SRC) $(PRESET_FILE) | $(STAMP)
	$(if $(FINDINGS_PY),$(call refresh,$(FINDINGS_PY)))
	rm -f book/executed/findings.md
	$(EXECUTE) $(FINDINGS_SRC) $@ -p preset $(PRESET) --cwd book
else
$(FINDINGS_OUT): FORCE
	@mkdir -p $(@D)
	@rm -f book/executed/findings.ipynb
	@echo "book/findings.ipynb does not exist yet: writing a placeholder findings page"
	@printf '%s\n\n%s\n%s\n' '# Findings' \
	  'The findings ledger (`book/findings.ipynb`) has not been written yet. Each report records' \
	  'its claims and their controls as it runs; this page will list them all.' > $@
endif

# --- book --------------------------------------------------------------------------------
# The intro page shows the timings table (book/executed/timings.md, from papermill's cell timings); the build ends
# by printing it.
book: $(EXECUTED) $(FINDINGS_OUT) | $(STAMP)
	$(BIN)/python scripts/check_toc.py book
	$(BIN)/python scripts/timings.py book/executed --write > /dev/null
	$(BIN)/jupyter-book build book/
	@echo
	@echo "Book: $(abspath book/_build/html/index.html)"
	@$(BIN)/python scripts/timings.py book/executed

# ghp-import (pinned in requirements.txt) commits the HTML to gh-pages and pushes it, as Jupyter Book's docs
# recommend; DRY_RUN=1 does it in a throwaway clone and pushes nothing.
publish: book
	$(BIN)/python scripts/publish.py $(if $(DRY_RUN),--dry-run)

# --- tests and housekeeping --------------------------------------------------------------
test: $(STAMP)
	$(BIN)/python -m pytest -q

sync: | $(STAMP)
	$(if $(NOTEBOOK_PY)$(FINDINGS_PY),$(BIN)/jupytext --sync $(NOTEBOOK_PY) $(FINDINGS_PY),@echo "no notebooks to sync")
	$(if $(NOTEBOOK_PY)$(FINDINGS_PY),$(BIN)/python scripts/strip_outputs.py $(NOTEBOOK_IPYNB) $(FINDINGS_SRC))

clean:
	rm -rf book/_build book/executed .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +


ARTIFACTS_DIR ?= artifacts
clean-artifacts:
	@[ -n "$(NAME)" ] || { echo "usage: make clean-artifacts NAME=<an artifact folder's name, e.g. model-3f2a9c01b7>"; exit 2; }
	@found=$$(find "$(ARTIFACTS_DIR)" -mindepth 2 -maxdepth 2 -type d -name "$(NAME)" 2>/dev/null); \
	[ -n "$$found" ] || { echo "no artifact folder named $(NAME) under $(ARTIFACTS_DIR)/<kind>/"; exit 1; }; \
	for d in $$found; do echo "removing $$d"; rm -rf "$$d"; done

# --- JupyterLab ---------------------------------------------------------------------------
LAB_PORT ?= 8888
lab: | $(STAMP)
	cd notebooks && ../$(BIN)/jupyter lab --no-browser --port $(LAB_PORT) $(if $(filter 0,$(shell id -u)),--allow-root)

FORCE:
