# Two commands matter: `make run` (the main job) and `make test` (every test).
# Both create or refresh .venv/ from pyproject.toml first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1
comma := ,

.PHONY: venv run test test-fast test-full lint export reference docs docs-build bench clean image image-test lab

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# Precompile once: where PYTHONDONTWRITEBYTECODE is set, every process would otherwise
	@# compile the ML stack from source (~11 s of imports instead of ~5 s).
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib worker exported > /dev/null || true
	touch $@

venv: $(STAMP)

run: venv
	$(BIN)/fastbackend run

# Lint and format gate: ruff, line length 120 (pyproject.toml).
lint: venv
	$(BIN)/ruff check --quiet .
	$(BIN)/ruff format --check --quiet .

test: venv lint docs-build
	$(BIN)/fastbackend export --check
	$(BIN)/fastbackend reference --check
	$(BIN)/fastbackend check --strict --summary exported/handler.py
	@# Two workers (pytest-xdist), each taking whole test files, so module fixtures are built once.
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=25 $(PYTEST_ARGS)

# The unit layer alone: no model, no subprocess, no network; well under a minute.
test-fast: venv
	$(BIN)/python -m pytest tests/unit -q

# The heavier variants too: tests marked `full` (among them the train pipeline end to end and the
# training notebook on each kind of broken dataset), 3,000 load requests, 5x the fuzz examples,
# 2,000 production-mode jobs.
test-full: venv
	FASTBACKEND_LOAD_REQUESTS=3000 FASTBACKEND_FUZZ_SCALE=5 FASTBACKEND_PRODUCTION_JOBS=2000 $(MAKE) test PYTEST_ARGS=--full

# Benchmarks print ratios against baselines measured in the same run, and rewrite docs/benchmarks.md.
bench: venv
	@test -f models/base/model.safetensors || $(BIN)/fastbackend pipeline run demo-models -p output_dir=models
	$(BIN)/python -m benchmarks

export: venv
	$(BIN)/fastbackend export

# Everything generated from the code: exported/ from the notebooks, then the reference pages,
# .runpod/hub.json's env list and schema/input.json from worker/ and the CLI (`reference --check` in make test).
reference: venv
	$(BIN)/fastbackend export
	$(BIN)/fastbackend reference

# The documentation site (docs/, mkdocs.yml): built, then served on http://127.0.0.1:$(DOCS_PORT).
DOCS_PORT ?= 8001
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

# Strict build into a throwaway folder (make test): a broken link, anchor or missing page fails.
docs-build: venv
	@site=$$(mktemp -d) && trap 'rm -rf "$$site"' EXIT && NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir "$$site"

# The serverless image (needs Docker). Your own models: make image BASE_MODEL=org/name|path ADAPTERS=path|none
# (a private hub model: HF_TOKEN in the environment, passed as a build secret, never a layer).
IMAGE ?= fastbackend-worker:latest
image:
	@command -v docker > /dev/null || { echo "make image needs Docker (docker build); see docs/tutorials/deploy.md" >&2; exit 1; }
	docker build --platform linux/amd64 -t $(IMAGE) \
		$(if $(BASE_MODEL),--build-arg BASE_MODEL=$(BASE_MODEL)) $(if $(ADAPTERS),--build-arg ADAPTERS=$(ADAPTERS)) \
		$(if $(HF_TOKEN),--secret id=hf_token$(comma)env=HF_TOKEN) .

# The image built and run on this machine, then checked: offline answer, local API, contents, size,
# cold start (fastbackend/imagetest.py). Needs a Docker engine; not part of `make test`.
image-test: venv
	$(BIN)/python -m fastbackend.imagetest $(if $(BASE_IMAGE),--base $(BASE_IMAGE))

# JupyterLab on this machine, as scripts/pod-setup.sh starts it on a pod (loopback, a token).
LAB_PORT ?= 8888
lab: venv
	scripts/pod-setup.sh --local --port $(LAB_PORT)

clean:
	rm -rf runs test-artifacts
