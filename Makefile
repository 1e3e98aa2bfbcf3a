# Developer entry points. Everything runs inside ./.venv, which `make venv` creates.
#
#   make venv          create .venv (if missing) and install the package + test extra
#   make demo          train the digits demo into $(WORKDIR) (fresh; RESUME=1 continues)
#   make test          run the unit tests on 2 processes
#   make conformance   check the zoo against DeepMind's published models (../shared)
#   make benchmarks    install the bench extra and rebuild BENCHMARKS.md's performance
#                      section (benchmarks/performance.py; ~25 min on 2 cores)

PYTHON  ?= python3
VENV    := .venv
# Written after a successful install; older than pyproject.toml or constraints.txt means
# the install is out of date and `make venv` runs pip again. Inside .venv, so deleting
# the venv also forgets the install.
STAMP   := $(VENV)/.perceiver-agents-installed
WORKDIR ?= runs/digits
RESUME  ?= 0

.PHONY: venv demo test conformance benchmarks

venv: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Order-only on the interpreter: creating the venv alone must not count as "changed".
$(STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --disable-pip-version-check -c constraints.txt -e '.[test]'
	# tf-keras for rlax's tensorflow-probability, without a second TensorFlow (pyproject).
	$(VENV)/bin/python -m pip install --disable-pip-version-check -c constraints.txt --no-deps tf-keras
	touch $@

demo: venv
	@if [ -z '$(WORKDIR)' ] || [ '$(WORKDIR)' = / ]; then echo "refusing WORKDIR='$(WORKDIR)'" >&2; exit 2; fi
	@if [ '$(RESUME)' != 1 ]; then echo "removing old $(WORKDIR) (RESUME=1 keeps it)"; rm -rf -- '$(WORKDIR)'; fi
	$(VENV)/bin/perceiver-agents train digits --workdir '$(WORKDIR)'

# pytest-xdist (for -n) comes with the test extra that `venv` installs. pytest exits 5
# when it collects no tests; that is left as a failure on purpose.
test: venv
	$(VENV)/bin/python -m pytest -n 2 -q tests

conformance: venv
	$(VENV)/bin/python ../shared/conformance/check.py

benchmarks: venv
	$(VENV)/bin/python -m pip install --disable-pip-version-check -c constraints.txt -e '.[bench]'
	$(VENV)/bin/python benchmarks/performance.py
