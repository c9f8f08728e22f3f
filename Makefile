# Every target sets up what it needs; `make test` and `make demo` work from a fresh clone.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo bench clean format

setup: $(STAMP)
	@./scripts/ensure-dovecot.sh

$(STAMP): requirements-dev.txt layers/core/requirements.txt pyproject.toml
	@PYTHON=$$(./scripts/find-python.sh) && \
	  if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then \
	    rm -rf $(VENV) && $$PYTHON -m venv $(VENV); fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

test: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider
	./scripts/check-template.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	./scripts/check-template.sh

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: setup
	$(VENV)/bin/emailrouter local demo

bench: setup
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .venv-sam .aws-sam .local
