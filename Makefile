# The two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
TEST_ENV := GATEWAY_VAR_DIR=$(CURDIR)/var/test GATEWAY_UPSTREAM_ALLOWLIST=127.0.0.0/8,::1 \
	GATEWAY_KEY_CACHE_TTL=30 SECRET_KEY=test-secret-key-not-for-production
PYTEST_ARGS ?=

.PHONY: run test test-fast test-slow lint bench bench-quick bench-limits bench-usage-write bench-soak \
	lock clean fuzz

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m gateway_project.localrun

# What some suites need beyond Python (Chromium, Node.js): installed when missing and possible.
.PHONY: test-deps
test-deps:
	tests/provision.sh

# The whole suite, slow multi-process tests included.
test: $(STAMP) test-deps
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

# Everything but the slow multi-process suites.
test-fast: $(STAMP) test-deps
	$(TEST_ENV) $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Longer bad-input runs: the hypothesis properties of tests/fuzz and schemathesis over the whole
# management API, with many more examples than the suite's bounded runs.
FUZZ_EXAMPLES ?= 1000
SCHEMATHESIS_EXAMPLES ?= 200
fuzz: $(STAMP)
	GATEWAY_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) GATEWAY_SCHEMATHESIS_EXAMPLES=$(SCHEMATHESIS_EXAMPLES) \
		$(TEST_ENV) $(PY) -m pytest tests/fuzz tests/api/test_openapi.py $(PYTEST_ARGS)

# Style, then the import rules: import-linter's contracts (pyproject.toml) and tests/architecture.py.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m tests.architecture

# mypy strict with the django-stubs plugin (config: pyproject.toml [tool.mypy]).
.PHONY: typecheck
typecheck: $(STAMP)
	$(PY) -m mypy .

bench-quick: $(STAMP)
	$(PY) -m bench.quick

bench: $(STAMP)
	$(PY) -m bench.run

# The pieces on their own: limiter cost with 0, 2 and 8 limits; XADD vs DB insert for usage events;
# per-worker RSS over 100k requests (bench/results/soak.md).
bench-limits: $(STAMP)
	$(PY) -m bench.limits

bench-usage-write: $(STAMP)
	$(PY) -m bench.usage_write

bench-soak: $(STAMP)
	$(PY) -m bench.soak

lock:
	rm -rf /tmp/gateway-lock && $(PYTHON) -m venv /tmp/gateway-lock
	/tmp/gateway-lock/bin/pip install --quiet -r requirements.in
	/tmp/gateway-lock/bin/pip freeze --exclude pip --exclude setuptools > requirements.txt

clean:
	rm -rf $(VENV) var
