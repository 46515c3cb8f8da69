# The two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Two stamps: `make run` needs the runtime lock (plus the demo's webhook receiver and SDK, in
# requirements-local.txt); tests and tools need the runtime and dev locks. Each names the checksums
# of what it installed, so a changed lock reinstalls.
RUN_STAMP := $(VENV)/.runtime-$(shell cat requirements.txt requirements-local.txt pyproject.toml | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)
TEST_ENV := GATEWAY_VAR_DIR=$(CURDIR)/var/test GATEWAY_UPSTREAM_ALLOWLIST=127.0.0.0/8,::1 \
	GATEWAY_KEY_CACHE_TTL=30 SECRET_KEY=test-secret-key-not-for-production
PYTEST_ARGS ?=

.PHONY: venv run test test-fast test-deploy lint bench bench-quick bench-profile bench-control bench-admin bench-ingest bench-limits bench-usage-write bench-soak \
	lock clean fuzz

# The project itself goes in editable (no dependencies: the locks pin them), for the `gateway` command.
define venv_install
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes $(1)
	$(PY) -m pip install --quiet --no-deps --editable .
endef

$(RUN_STAMP): requirements.txt requirements-local.txt pyproject.toml
	$(call venv_install,-r requirements.txt -r requirements-local.txt)
	rm -f $(VENV)/.runtime-*
	touch $@

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(call venv_install,-r requirements.txt -r requirements-dev.txt)
	rm -f $(VENV)/.installed-* $(VENV)/.runtime-*
	touch $@ $(RUN_STAMP)

venv: $(STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/gateway local

# What some suites need beyond Python (Chromium, Node.js, podman and mmdebstrap for the image
# tests): installed when missing and possible.
.PHONY: test-deps
test-deps:
	tests/provision.sh

# The suite, slow multi-process tests included; the deployment builds are `make test-deploy`'s.
# pytest exits 5 when nothing is collected, which fails the target like any other failure.
test: $(STAMP) test-deps
	$(TEST_ENV) $(PY) -m pytest -m "not deploy" $(PYTEST_ARGS)

# Everything but the slow multi-process suites (and the deployment builds, which are slow too).
test-fast: $(STAMP) test-deps
	$(TEST_ENV) $(PY) -m pytest -m "not slow and not deploy" $(PYTEST_ARGS)

# The deployment builds: the container image (podman, mmdebstrap), the wheel in a fresh venv and
# the compose services on loopback. Minutes each; CI runs them after `make test` (.ci/run).
test-deploy: $(STAMP) test-deps
	$(TEST_ENV) $(PY) -m pytest -m deploy $(PYTEST_ARGS)

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

# Where a gateway worker's CPU goes under load: py-spy on one worker while hey drives 2 limits +
# usage recording, top frames and CPU us/request (BENCH_PROFILE_ARGS="--only json --seconds 20").
BENCH_PROFILE_ARGS ?=
bench-profile: $(STAMP)
	$(PY) -m bench.profile $(BENCH_PROFILE_ARGS)

# The management API: N groups created with limits and a key each by 8 concurrent clients, then
# get/PATCH/lookup/usage/revoke/events/list timed (BENCH_CONTROL_ARGS="--groups 100000" for a big lab).
BENCH_CONTROL_ARGS ?=
bench-control: $(STAMP)
	$(PY) -m bench.control $(BENCH_CONTROL_ARGS)

# The support admin at a big lab's size: 100,000 groups and keys (with their audit rows and usage
# events) generated in PostgreSQL, every page support uses timed, p50/p99 and queries per page
# (BENCH_ADMIN_ARGS="--groups 20000" for a quicker run).
BENCH_ADMIN_ARGS ?=
bench-admin: $(STAMP)
	$(PY) -m bench.admin $(BENCH_ADMIN_ARGS)

# The billing pipeline: a backlog of usage events through ingest, webhook delivery and the events
# API, one worker process (BENCH_INGEST_ARGS="--events 1000000").
BENCH_INGEST_ARGS ?=
bench-ingest: $(STAMP)
	$(PY) -m bench.ingest $(BENCH_INGEST_ARGS)

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

# Regenerate the hashed locks from requirements*.in (pip-tools in a private venv). Existing pins are kept; `make lock LOCK_ARGS=--upgrade` moves them.
LOCK_VENV := /tmp/gateway-lock
LOCK_ARGS ?=
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet \
	--generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links $(LOCK_ARGS)
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || \
		($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet pip-tools)
	$(PIP_COMPILE) -o requirements.txt requirements.in
	$(PIP_COMPILE) -o requirements-dev.txt requirements-dev.in
	$(PIP_COMPILE) -o requirements-local.txt requirements-local.in

clean:
	rm -rf $(VENV) var build dist *.egg-info
