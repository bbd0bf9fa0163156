# 微调实战 — the two commands of the README: `make course` and `make test`.
# Everything runs inside .venv/ at the repository root, created on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup course test lab clean-work

# Re-install only when a requirements file changes.
$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m helpers.setup_offline
	touch $(STAMP)

setup: $(STAMP)

# Run the whole course headless on the configured backend (local by default).
course: $(STAMP)
	$(PY) -m helpers.course run

# Unit tests, nbval over every notebook (tiny model) and the browser test.
test: $(STAMP)
	$(PY) -m pytest

# Open the course in JupyterLab with the local backend running.
lab: $(STAMP)
	$(PY) -m helpers.lab

# Remove generated work files (uploads, jobs and adapters of the local server included).
clean-work:
	rm -rf data/work build
