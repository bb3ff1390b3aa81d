# Two entry points for a fresh machine: `make demo` and `make test` (each sets up .venv first).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench chromium
setup: $(VENV)/.installed

# torch==2.13.0 first when torch is absent: on these machines that exact pin is the local CPU build,
# whereas a bare requirement would download gigabytes of CUDA packages.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,ray]'
	touch $@

demo: setup
	$(VENV)/bin/synthnet demo

test: setup chromium
	$(VENV)/bin/pytest -q

# The report test renders HTML in Debian's headless chromium: installed when missing (as root, or through sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

bench: setup
	$(PY) benchmarks/evaluator.py
