# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean-results bench-ssl bench-dbb bench-reports bench-loader

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bench run matrix/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

bench-ssl: $(STAMP)
	$(PY) benchmarks/ssl_throughput.py

bench-dbb: $(STAMP)
	$(PY) benchmarks/dbb_padchest.py

bench-reports: $(STAMP)
	$(PY) benchmarks/report_aggregate.py

bench-loader: $(STAMP)
	$(PY) benchmarks/loader_throughput.py

clean-results:
	rm -rf results data/synthetic
