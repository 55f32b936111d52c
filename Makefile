# fleetrun — `make run` starts the local stack, `make test` runs every test (both install what they need).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

RUN_STAMP := $(VENV)/.installed-run
SYSTEM_STAMP := $(VENV)/.installed-system
#: Debian packages the tests drive for real; `make test` installs the missing ones
DEBIAN_PACKAGES := prometheus chromium chromium-driver

.PHONY: run test lint unit integration e2e bench clean screenshots

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# `make run` needs only the service and the client; `make test` adds the test and lint tools
$(RUN_STAMP): $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt -e '.[local]'
	@touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP) requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

$(SYSTEM_STAMP): $(BIN)/python Makefile
	tools/debian-packages.sh $(DEBIAN_PACKAGES)
	@touch $(SYSTEM_STAMP)

run: $(RUN_STAMP)
	$(BIN)/fleetrun local up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy chalicelib app.py fleetrun

test: lint $(SYSTEM_STAMP)
	$(BIN)/pytest -q -n 2 tests

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q -n 2 tests/integration

e2e: $(STAMP)
	$(BIN)/pytest -q tests/e2e

bench: $(STAMP)
	$(BIN)/python bench/requests.py

# the README's picture of the dashboard: the browser test writes test-output/ only, this copies it
screenshots: $(STAMP) $(SYSTEM_STAMP)
	$(BIN)/pytest -q tests/e2e/test_dashboard_browser.py
	mkdir -p docs/img
	cp test-output/dashboard-task.png docs/img/dashboard-task.png

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# --- infrastructure: the CDK app in infra/ (see infra/README.md) ------------------------
# `make synth` synthesizes offline into cdk.out/; `make deploy` needs AWS credentials and a
# bootstrapped account (`make bootstrap` once per account and region). STAGE=dev|prod;
# more context with CDK_ARGS, e.g. CDK_ARGS="-c prod:alarmEmail=ops@example.com".
INFRA_STAMP := $(VENV)/.installed-infra
STAGE ?= dev
CDK_ARGS ?=
CDK_CLI_VERSION ?= 2.1148.1
CDK := cd infra && npx --yes aws-cdk@$(CDK_CLI_VERSION)

.PHONY: synth bootstrap deploy package infra-test

$(INFRA_STAMP): $(RUN_STAMP) requirements-infra.txt
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-infra.txt
	@touch $(INFRA_STAMP)

# the infra tests (part of `make test`) synthesize the stacks: install the CDK first
test: $(INFRA_STAMP)

synth: $(INFRA_STAMP)
	$(BIN)/python infra/app.py -c stage=$(STAGE) $(CDK_ARGS)

bootstrap: $(INFRA_STAMP)
	$(CDK) bootstrap -c stage=$(STAGE) $(CDK_ARGS)

deploy: $(INFRA_STAMP)
	$(CDK) deploy -c stage=$(STAGE) $(CDK_ARGS)

package: $(INFRA_STAMP)
	$(BIN)/python infra/packaging.py build/package-$(STAGE) --stage $(STAGE)

infra-test: $(STAMP) $(INFRA_STAMP)
	$(BIN)/pytest -q -m infra tests/infra
