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

# Two pytest workers (CI has 2 cores): most tests keep at most one core busy (one single-threaded
# process, or a `bench` waiting on its worker), so a serial run leaves a core idle. Whole files go
# to one worker (--dist loadfile): a module's shared fixtures (one study run read by several tests)
# are computed once. One torch/OpenMP thread per process, so that two workers do not oversubscribe.
TEST_WORKERS ?= 2
test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile

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
