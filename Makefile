# Thin wrappers. Every target first makes sure .venv exists and holds the kit (set-up is skipped
# when pyproject.toml has not changed since the last install).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.course_lib-installed
PYTEST_ARGS ?=
LAB_ARGS ?=
STUDENT_DIR ?= build/student
SUBMISSIONS ?= submissions
GRADES ?= grades.csv
GRADE_TIMEOUT ?= 600
# make lecture NB=05: the notebook to present
NB ?=
# NO_SANDBOX=1: grade without bubblewrap (a Mac); no isolation, and every CSV row says so
NO_SANDBOX ?=
# PyTorch build, installed before the kit (tools/torch_install.py): auto = the CPU build on Linux/Windows without an
# NVIDIA driver, the CUDA build for the driver's CUDA version with one, PyPI's on macOS; a torch already in .venv is
# left alone. cpu, cuda, cu126, pypi, ... choose it, and replace a different build already in .venv.
TORCH_BACKEND ?= auto
# JupyterLab refuses to start as root (containers, CI) unless told it may.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: setup lab lecture test test-browser bench html lint clean student grade prepare

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python tools/torch_install.py --backend '$(TORCH_BACKEND)'
	$(BIN)/python -m pip install -e '.[jupyter,dev,browser]'
	touch $@

setup: $(STAMP)
ifneq ($(TORCH_BACKEND),auto)
	$(BIN)/python tools/torch_install.py --backend '$(TORCH_BACKEND)'
endif

lab: setup  ## open JupyterLab on notebooks/
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

lecture: setup  ## present notebook NB as slides, widgets live (make lecture NB=05); checks its models first
	$(BIN)/python -m course_lib lecture $(NB)

test: setup  ## the whole test suite: unit tests, lint, every notebook in FAST mode, the JupyterLab server
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-browser: setup  ## only the browser tests: JupyterLab in Chromium, screenshots in build/browser/
	$(BIN)/python -m pytest tests/browser $(PYTEST_ARGS)

bench: setup  ## speed and quality figures, as a markdown table
	$(BIN)/python bench/run.py

html: setup  ## execute every notebook (FAST unless COURSE_FAST=0) and export HTML to build/html/
	$(BIN)/python -m course_lib run-notebooks --html build/html

student: setup  ## the student version of every notebook into $(STUDENT_DIR)
	$(BIN)/python -m course_lib student --out $(STUDENT_DIR)

grade: setup  ## grade $(SUBMISSIONS)/<student>/NN_name.ipynb into $(GRADES)
	$(BIN)/python -m course_lib grade $(SUBMISSIONS) --out $(GRADES) --timeout $(GRADE_TIMEOUT) \
		$(if $(NO_SANDBOX),--no-sandbox,)

prepare: setup  ## load or train every model the notebooks use (before a lecture)
	$(BIN)/python -m course_lib prepare

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -exec rm -rf {} +
