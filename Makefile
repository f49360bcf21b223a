# Set-up and the two commands the README gives. `make run` and `make test` create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test test-all smoke report clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'  # the versions results and pins were made with
	touch $@

run: $(VENV)/.installed          ## the main job: the base-model sweep on the embedded toy world
	$(PY) -m rmexp +sweep=base_models

# Two test processes: many tests wait on subprocesses, servers and Ray, so two on 2 cores took 616 s where one took
# 942 s (same machine, 2026-11-27). TEST_WORKERS=0 runs them in this process (pytest-xdist's -n 0).
TEST_WORKERS ?= 2

test: $(VENV)/.installed         ## the default test run (slow tests excluded)
	$(PY) -m pytest -q -n $(TEST_WORKERS)

test-all: $(VENV)/.installed     ## every test, the slow end-to-end ones too
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m ""

smoke: $(VENV)/.installed
	$(PY) -m rmexp +sweep=smoke

report: $(VENV)/.installed       ## docs/results.md from MLflow (every study); REPORT_ARGS=--run runs the sweeps first
	$(PY) -m rmexp.report $(REPORT_ARGS)

clean:
	rm -rf runs outputs .rmexp_cache mlflow.db mlartifacts
