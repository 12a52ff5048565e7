# The two commands: `make dev` (serve the API locally) and `make test` (every test). See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
SAM_VENV := $(VENV)/sam
MINISTACK_VENV := $(VENV)/ministack
# Pinned tool versions (docs/local-aws.md). SAM and MiniStack pin conflicting boto3 versions,
# so each lives in its own venv under .venv/.
CARGO_LAMBDA_VERSION := 1.9.2
SAM_CLI_VERSION := 1.170.0
MINISTACK_VERSION := 1.5.33
SAM_TRANSLATOR_VERSION := 1.115.0
# The template's security scan (`make test-template`); a venv of its own, its pins are not SAM's.
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_VERSION := 3.3.30
# The API conformance check (scripts/schemathesis_run.py, docs/api-conformance.md): a venv of its own.
SCHEMATHESIS_VENV := $(VENV)/schemathesis
SCHEMATHESIS_VERSION := 4.32.5
# The local Stripe (localstripe, scripts/stripe_local.py) that stacks deployed with PaymentProvider=stripe
# charge through, beside their emulator: a venv of its own (aiohttp pins of its own).
STRIPE_VENV := $(VENV)/stripe
LOCALSTRIPE_VERSION := 1.15.10

export AWS_DEFAULT_REGION ?= us-east-1
# The stack `make metrics` and `make redrive-outbox` read (shop-local is `make dev`'s).
STACK ?= shop-local
export SAM_CLI_TELEMETRY := 0
# cargo-lambda finds its zig only when the venv's bin/ comes first.
TOOLS_PATH := $(abspath $(SAM_VENV))/bin:$(PATH)
LOCAL_STACK := $(SAM_VENV)/bin/python scripts/local_stack.py
# Locust has a venv of its own too (its pins are not SAM's).
LOAD_VENV := $(VENV)/load
LOCUST_VERSION := 2.47.0
LOAD_TEST := $(SAM_VENV)/bin/python scripts/load_test.py
# Local traces: Arize Phoenix (OTLP receiver and trace waterfalls) and Playwright, which drives Debian's
# Chromium for the page checks (no browser download).
TRACES_VENV := $(VENV)/traces
PHOENIX_VERSION := 20.26.1
PLAYWRIGHT_VERSION := 1.65.2
CHROMIUM := /usr/bin/chromium
TRACES_SCRIPT := $(TRACES_VENV)/bin/python scripts/traces.py
TRACES_PORT ?= 6006
# `make dev TRACES=1` also installs and starts Phoenix; TRACES is the user's flag and nothing else.
TRACES_ON := $(filter 1,$(TRACES))
# What serving the stack needs (the SAM and MiniStack venvs), and what the page checks need beside it
# (Phoenix and Playwright, Debian's Chromium): only the targets that run those checks install them.
STACK_TOOLS := $(SAM_VENV)/.installed $(MINISTACK_VENV)/.installed
PAGE_TOOLS := $(TRACES_VENV)/.installed $(CHROMIUM)
# `make dev PARAMS="PaymentProvider=stripe"` also installs the local Stripe; a mock stack needs none of it.
STRIPE_ON := $(filter PaymentProvider=stripe,$(PARAMS))
# When this make started (before installs and the Rust build): `make dev` reports its time to ready from it.
MAKE_STARTED := $(shell date +%s)
# The docs page's viewer (functions/docs-page/assets/, from the npm registry; `make docs-assets`).
SWAGGER_UI_VERSION := 5.35.0

.PHONY: help tools arm64-target dev url ws-url watch metrics docs-assets test test-unit test-template test-e2e test-chaos test-load chaos load bench lint fmt build-aws clean redrive-outbox

help:
	@echo "make dev    - install the SAM and MiniStack venvs, start the local emulator, deploy, seed, prove the"
	@echo "             event source mappings, serve the API (Ctrl-C stops)"
	@echo "             PARAMS=\"Name=Value ...\" overrides template parameters (e.g. FaultInjection;"
	@echo "             PaymentProvider=stripe charges through a local Stripe started beside the emulator)"
	@echo "             TRACES=1 also starts Phoenix: spans at :$(TRACES_PORT)/v1/traces, waterfalls at http://127.0.0.1:$(TRACES_PORT)"
	@echo "make test   - lint, unit tests, template checks, the end-to-end and chaos suites on private emulators"
	@echo "make url    - print the running local API's base URL"
	@echo "make ws-url - print the running local WebSocket API's URL (connect with ?token=<access token>)"
	@echo "make metrics - the EMF metrics of the last MINUTES (default 15) from the functions' logs (STACK=..., AWS=1)"
	@echo "make watch  - hot-reload the functions with cargo lambda watch against the make-dev emulator"
	@echo "make bench  - every figure beside its budget: cold start, latency, RSS, zip sizes, cache and round trips"
	@echo "make load   - load test (Locust): mixed scenario, p50/p95/p99, invariants; local or SHOP_API_URL"
	@echo "make chaos  - the fault scenarios (payment, send, lost transaction answers, publish, sweep, restart)"
	@echo "make build-aws - release arm64 build of every function, as sam build does"
	@echo "make redrive-outbox - feed the outbox's failed records to the publisher again (STACK=..., AWS=1)"
	@echo "make docs-assets - fetch the docs page's Swagger UI files again from npm (SWAGGER_UI_VERSION)"

tools: $(STACK_TOOLS) $(PAGE_TOOLS) $(STRIPE_VENV)/.installed

# AWS runs the functions on arm64 (Graviton): the release builds for it need that target's std
# (a no-op once installed).
arm64-target:
	rustup target add aarch64-unknown-linux-gnu

$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check \
		cargo-lambda==$(CARGO_LAMBDA_VERSION) aws-sam-cli==$(SAM_CLI_VERSION)
	touch $@

# MiniStack applies the SAM transform only when aws-sam-translator is importable in its own venv.
$(MINISTACK_VENV)/.installed:
	$(PYTHON) -m venv $(MINISTACK_VENV)
	$(MINISTACK_VENV)/bin/pip install --quiet --disable-pip-version-check \
		ministack==$(MINISTACK_VERSION) aws-sam-translator==$(SAM_TRANSLATOR_VERSION)
	touch $@

$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	touch $@

$(STRIPE_VENV)/.installed:
	$(PYTHON) -m venv $(STRIPE_VENV)
	$(STRIPE_VENV)/bin/pip install --quiet --disable-pip-version-check localstripe==$(LOCALSTRIPE_VERSION)
	touch $@

$(SCHEMATHESIS_VENV)/.installed:
	$(PYTHON) -m venv $(SCHEMATHESIS_VENV)
	$(SCHEMATHESIS_VENV)/bin/pip install --quiet --disable-pip-version-check schemathesis==$(SCHEMATHESIS_VERSION)
	touch $@

$(TRACES_VENV)/.installed:
	$(PYTHON) -m venv $(TRACES_VENV)
	$(TRACES_VENV)/bin/pip install --quiet --disable-pip-version-check \
		arize-phoenix==$(PHOENIX_VERSION) playwright==$(PLAYWRIGHT_VERSION)
	touch $@

# Debian's Chromium, for the headless page checks (root, or sudo, installs it).
$(CHROMIUM):
	$(if $(filter 0,$(shell id -u)),,sudo) sh -c 'apt-get install -y --no-install-recommends chromium || \
		{ apt-get update && apt-get install -y --no-install-recommends chromium; }'

# PARAMS="Name=Value ..." overrides template parameters of the local stack (a changed set redeploys).
# Only the SAM and MiniStack venvs; TRACES=1 adds the traces venv and Phoenix on TRACES_PORT, and
# PaymentProvider=stripe the Stripe venv (the local Stripe starts beside the emulator).
dev: $(STACK_TOOLS) $(if $(TRACES_ON),$(TRACES_VENV)/.installed) $(if $(STRIPE_ON),$(STRIPE_VENV)/.installed)
	$(LOCAL_STACK) up --serve --params "$(PARAMS)" --since $(MAKE_STARTED) $(if $(TRACES_ON),--traces-port $(TRACES_PORT))

url:
	@$(LOCAL_STACK) url

ws-url:
	@$(LOCAL_STACK) url --websocket

# The EMF metrics the functions wrote in the last MINUTES, read back from CloudWatch Logs (the same
# `logs` API on the emulator and on AWS): count, sum, min, max per metric and dimensions.
MINUTES ?= 15
metrics: $(STACK_TOOLS)
	@$(LOCAL_STACK) metrics --stack $(STACK) --minutes $(MINUTES) $(if $(AWS),--aws)

watch: $(STACK_TOOLS)
	@test -f .local/shop-local.watch.env || { echo "run 'make dev' first (watch uses its emulator and tables)"; exit 1; }
	PATH="$(TOOLS_PATH)" cargo lambda watch -A 127.0.0.1 -P 9000 --env-file .local/shop-local.watch.env

test: lint test-unit test-template test-e2e test-load test-chaos

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

test-unit:
	cargo test --locked --workspace --exclude e2e --tests
	cargo test --locked -p e2e --test layout

# checkov fails on any finding not suppressed in the template itself (Metadata: checkov: skip:, each with
# its reason); --skip-download keeps it offline (no Prisma Cloud guideline links).
test-template: $(STACK_TOOLS) $(CHECKOV_VENV)/.installed
	$(SAM_VENV)/bin/sam validate --lint --template-file template.yaml
	$(SAM_VENV)/bin/python scripts/check_template.py
	$(CHECKOV_VENV)/bin/checkov --file template.yaml --framework cloudformation --compact --quiet --skip-download

# The observability and docs page checks run beside the suite: Phoenix, Playwright and Chromium; the
# API conformance check (schemathesis, docs/api-conformance.md) after it; the local Stripe for the
# suite's stripe stack.
test-e2e: $(STACK_TOOLS) $(PAGE_TOOLS) $(SCHEMATHESIS_VENV)/.installed $(STRIPE_VENV)/.installed
	$(LOCAL_STACK) e2e

# The API conformance check against the running `make dev` stack (or SHOP_API_URL); CONFORMANCE_ARGS="--max-time 300".
.PHONY: conformance
conformance: $(STACK_TOOLS) $(SCHEMATHESIS_VENV)/.installed
	$(SAM_VENV)/bin/python scripts/schemathesis_run.py --api "$${SHOP_API_URL:-$$($(LOCAL_STACK) url)}" $(CONFORMANCE_ARGS)

# Failure paths proven: a private emulator, one stack per fault scenario (FaultInjection), the
# invariants checked after each; then an emulator restart under traffic. One row per scenario.
test-chaos: $(STACK_TOOLS)
	$(LOCAL_STACK) chaos

chaos: test-chaos

$(LOAD_VENV)/.installed:
	$(PYTHON) -m venv $(LOAD_VENV)
	$(LOAD_VENV)/bin/pip install --quiet --disable-pip-version-check locust==$(LOCUST_VERSION)
	touch $@

# The mixed load scenario (loadtest/locustfile.py) and its invariants, on a private emulator (port 4580),
# or against SHOP_API_URL (with SHOP_ADMIN_EMAIL/SHOP_ADMIN_PASSWORD). LOAD_ARGS="--users 20 --duration 2m".
load: $(STACK_TOOLS) $(LOAD_VENV)/.installed
	$(LOAD_TEST) $(LOAD_ARGS)

# The short run inside `make test`; always local (an exported SHOP_API_URL is ignored).
test-load: $(STACK_TOOLS) $(LOAD_VENV)/.installed
	SHOP_API_URL= $(LOAD_TEST) --users 8 --spawn-rate 4 --duration 30s

# Every performance figure beside its budget, in one run (scripts/bench.py): release builds of every
# function and of a minimal reference function (bench/reference), cold start / first call / warm
# p50-p99 / peak RSS under the script's own Runtime API with the contenders alternating, arm64 zip
# sizes, catalogue-cache and rate-limiter DynamoDB counts, round trips and order-to-notification
# latency, on a private emulator (port 4578). BENCH_ARGS="--rounds 3 --warm 50".
bench: $(STACK_TOOLS) arm64-target
	PATH="$(TOOLS_PATH)" $(SAM_VENV)/bin/python scripts/bench.py $(BENCH_ARGS)

# Feeds the outbox's failed records (failed-records queue) to the events publisher again (README
# "Failure handling"). Local stack by default; STACK=shop-dev AWS=1 for a stack on AWS.
redrive-outbox: $(STACK_TOOLS)
	$(SAM_VENV)/bin/python scripts/redrive_outbox.py --stack $(STACK) \
		$(if $(AWS),,--endpoint $$($(LOCAL_STACK) endpoint --stack $(STACK)))

# Fetches the docs page's Swagger UI files again from the npm registry (after a SWAGGER_UI_VERSION change);
# they are committed, so a build never needs npm.
docs-assets:
	rm -rf .local/swagger-ui && mkdir -p .local/swagger-ui
	cd .local/swagger-ui && npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) && tar xzf swagger-ui-dist-$(SWAGGER_UI_VERSION).tgz
	cp .local/swagger-ui/package/swagger-ui-bundle.js .local/swagger-ui/package/swagger-ui.css \
		.local/swagger-ui/package/LICENSE .local/swagger-ui/package/NOTICE functions/docs-page/assets/

build-aws: $(STACK_TOOLS) arm64-target
	PATH="$(TOOLS_PATH)" $(SAM_VENV)/bin/sam build

clean:
	cargo clean
	rm -rf .aws-sam .local
