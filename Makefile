# 微调实战 — the commands of the README: `make course`, `make test`, `make test-fast`, `make lab`.
# Everything runs inside .venv/ at the repository root, created on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup course test test-fast lab clean-work

# Re-install only when pyproject.toml or a requirements file changes. The workbook itself is installed
# editable (helpers importable from any folder), its dependencies at the pins of requirements.txt.
# The llama.cpp runtime of the export tests and notebook 08 (node-llama-cpp's prebuilt linux-x64 CPU binaries,
# from the npm registry, ~10 s, nothing compiled) goes into helpers/llamacpp_runtime/node_modules; without npm it is skipped
# with a warning (also when npm ci fails) and the tests that need it say so.
$(STAMP): pyproject.toml requirements.txt requirements-nodeps.txt helpers/llamacpp_runtime/package-lock.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.txt -e ".[test]"
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m helpers.setup_offline
	if command -v npm >/dev/null; then npm ci --prefix helpers/llamacpp_runtime --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error \
	|| echo "warning: npm ci failed: the llama.cpp runtime is not installed (notebook 08 skips llama.cpp, its tests say why)"; \
	else echo "warning: npm not found: the llama.cpp runtime (helpers/llamacpp_runtime) is not installed"; fi
	touch $(STAMP)

setup: $(STAMP)

# Run the whole course headless on the configured backend (local by default).
course: $(STAMP)
	$(PY) -m helpers.course run

# Unit tests, nbval over every notebook (tiny model) and the browser test.
test: $(STAMP)
	$(PY) -m pytest

# Unit and API tests only (no browser, no course run, no nbval): everything not marked slow.
test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow"

# Open the course in JupyterLab with the local backend running.
lab: $(STAMP)
	$(PY) -m helpers.lab

# Remove generated work files (uploads, jobs and adapters of the local server included).
clean-work:
	rm -rf data/work build
