# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The exact versions of everything installed (pyproject.toml has the ranges).
LOCK := requirements.lock
# The development key of `make run` and the tests (site_config/settings.py reads it when
# SECRET_KEY is not set); a deployment sets SECRET_KEY instead.
VAR_DIR ?= var
LOCAL_KEY := $(VAR_DIR)/secret_key

.PHONY: run test check lint bench clean demo-htmx

# Re-installs whenever the package metadata or the pinned versions change.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[site,test]"
	@touch $(STAMP)

$(LOCAL_KEY):
	@mkdir -p $(VAR_DIR)
	@umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(50))" > $@.tmp && mv $@.tmp $@

run: $(STAMP) $(LOCAL_KEY)
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py serve

test: $(STAMP) $(LOCAL_KEY)
	$(PY) manage.py check --fail-level WARNING
	$(PY) -m pytest $(PYTEST_ARGS)

# Lint, format and types (mypy, strict on events/: pyproject.toml).
check lint: $(STAMP) $(LOCAL_KEY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench

# The demo's copy of htmx and its SSE extension (demo/static/demo/), from npm, at the
# versions the browser tests' lock pins. Only needed after changing that lock.
NPM_DIR := var/npm-demo
demo-htmx:
	rm -rf $(NPM_DIR) && mkdir -p $(NPM_DIR)
	cp tests/e2e/npm/package.json tests/e2e/npm/package-lock.json $(NPM_DIR)/
	cd $(NPM_DIR) && npm ci --ignore-scripts --no-audit --no-fund
	cp $(NPM_DIR)/node_modules/htmx.org/dist/htmx.min.js demo/static/demo/htmx.min.js
	cp $(NPM_DIR)/node_modules/htmx-ext-sse/dist/sse.min.js demo/static/demo/htmx-ext-sse.min.js

clean:
	rm -rf $(VENV) var
