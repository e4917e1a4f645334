# Two entry points for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# DALI wheels exist for Linux x86_64/aarch64 only; elsewhere the torch backend is used.
EXTRAS := dev
ifeq ($(shell uname -s),Linux)
ifneq ($(filter x86_64 aarch64,$(shell uname -m)),)
EXTRAS := dev,dali-cu13
endif
endif

.PHONY: demo test test-long bench clean

demo: $(STAMP)
	$(VENV)/bin/fastfashion demo --out demo_out

test: $(STAMP)
	$(VENV)/bin/ruff check fastfashion tests benchmarks
	$(PY) -m pytest tests -m "not long"

test-long: $(STAMP)
	$(PY) -m pytest tests -m long

bench: $(STAMP)
	$(PY) -m pytest benchmarks --benchmark-only --benchmark-json=benchmarks/results/bench-$$(date +%Y%m%d-%H%M%S).json

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) demo_out build *.egg-info
