# flowseg: `make demo` runs the whole pipeline in a lab of network namespaces;
# `make test` runs unit, lab integration and end-to-end packet tests. Both need root.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: deps test unit lab fuzz demo bench clean

deps:
	scripts/install-deps $(VENV)

test: deps
	$(PY) -m pytest -q -ra

unit: deps
	$(PY) -m pytest -q -m "not lab"

lab: deps
	$(PY) -m pytest -q -m lab

# The long fuzz run: 50,000 cases per parser instead of the 1,000 of `make test`.
fuzz: deps
	FLOWSEG_FUZZ=long $(PY) -m pytest -q tests/unit/test_fuzz.py

demo: deps
	$(PY) examples/demo.py

# The benchmark (bench/README.md): not part of `make test`. ARGS=--quick for 10-1,000 rules.
bench: deps
	$(VENV)/bin/pip install -q '.[bench]'
	$(PY) bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
