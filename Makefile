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
# JupyterLab refuses to start as root (containers, CI) unless told it may.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: setup lab test test-browser bench html lint clean student grade prepare

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[jupyter,dev,browser]'
	touch $@

setup: $(STAMP)

lab: setup  ## open JupyterLab on notebooks/
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

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
	$(BIN)/python -m course_lib grade $(SUBMISSIONS) --out $(GRADES) --timeout $(GRADE_TIMEOUT)

prepare: setup  ## load or train every model the notebooks use (before a lecture)
	$(BIN)/python -m course_lib prepare

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -exec rm -rf {} +
