# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install demo test bench lint data codec clean

install: $(STAMP)

# torch first (the CPU wheel on this disk; a plain `torch` would pull a CUDA build),
# then the project with its dev extra, then encodec without its torchaudio dependency.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps encodec==0.1.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/continuo demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pytest -q -s tests/bench -p no:cacheprovider --override-ini addopts=

lint: $(STAMP)
	$(VENV)/bin/ruff check server bridge tests

# Rendered piano data and the small codec (long: runs in several sittings, resumes).
data: $(STAMP)
	$(VENV)/bin/continuo data piano data/piano

codec: $(STAMP)
	$(VENV)/bin/continuo train codec data/piano --out runs/codec

clean:
	rm -rf $(VENV) .pytest_cache
