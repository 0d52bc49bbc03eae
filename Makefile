# Everything a fresh machine needs: python3 (>= 3.11) and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell $(PYTHON) -c 'import hashlib,sys;print(hashlib.sha1(open("pyproject.toml","rb").read()).hexdigest()[:12])')

.PHONY: venv demo test test-apiserver lint bench up clean docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/jobqueue demo

up: $(STAMP)
	$(BIN)/jobqueue up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy  # --strict over jobqueue, manager and consumer: [tool.mypy] in pyproject.toml

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The slow tier: a real kube-apiserver + controller-manager 1.20 (built once, ~12 min, cached under
# ~/.cache/k8s-control-plane; needs root for apt-get). See tests/k8s/README.md.
test-apiserver: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/apiserver

bench: $(STAMP)
	$(BIN)/python bench/offline_query.py

docs: $(STAMP)
	$(BIN)/python -m jobqueue.cli.main settings --markdown > docs/settings.md

clean:
	rm -rf $(VENV) .pytest_cache .jobqueue
