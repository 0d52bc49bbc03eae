# Everything a fresh machine needs: python3 (>= 3.11) and make.
# The venv installs the pinned tree in requirements.lock (every extra, Python 3.11, linux x86_64), then this
# package without dependencies; pyproject.toml keeps the ranges for people who install the package.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements.lock
STAMP  := $(VENV)/.installed-$(shell $(PYTHON) -c 'import hashlib;print(hashlib.sha1(open("pyproject.toml","rb").read()+open("$(LOCK)","rb").read()).hexdigest()[:12])')
# `make lock` keeps the pins that still fit pyproject.toml; `make lock UPGRADE=1` moves every pin to the newest release.
COMPILE := pip compile pyproject.toml --all-extras --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	--custom-compile-command "make lock" $(if $(UPGRADE),--upgrade) --quiet -o $(LOCK)

.PHONY: venv lock demo test test-apiserver test-node lint bench up clean docs browser screenshots
# The console's browser tests drive Debian's chromium (`make browser`); Playwright never downloads a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
CHROMIUM ?= /usr/bin/chromium

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

lock: $(STAMP)
	$(BIN)/uv $(COMPILE)

demo: $(STAMP)
	$(BIN)/jobqueue demo

up: $(STAMP)
	$(BIN)/jobqueue up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy  # --strict over jobqueue, manager and consumer: [tool.mypy] in pyproject.toml

# Debian's chromium for tests/integration/test_console_browser.py, installed only when missing (needs root).
browser:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The README's console screenshots (docs/console/*.png): a real `jobqueue up` with a few jobs, one spilling.
screenshots: $(STAMP) browser
	PYTHONPATH=. $(BIN)/python docs/console/screenshots.py

test: $(STAMP) lint browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The slow tier: a real kube-apiserver + controller-manager 1.20 (built once, ~12 min, cached under
# ~/.cache/k8s-control-plane; needs root for apt-get). See tests/k8s/README.md.
test-apiserver: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/apiserver

# The node tier: the same control plane plus kube-scheduler, containerd and a kubelet; the image built from
# the Dockerfile; consumers as pods (root; caches under ~/.cache). -s: it prints what it measures.
test-node: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -s tests/node

bench: $(STAMP)
	$(BIN)/python bench/offline_query.py

docs: $(STAMP)
	$(BIN)/python -m jobqueue.cli.main settings --markdown > docs/settings.md

clean:
	rm -rf $(VENV) .pytest_cache .jobqueue
