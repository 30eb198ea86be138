# FastBackend serverless worker for RunPod. Build and push (README, "Deploy to RunPod"):
#   docker build --platform linux/amd64 -t <user>/fastbackend-worker:0.1.0 .
#   docker push <user>/fastbackend-worker:0.1.0
# Your own models, baked in so that a cold start downloads nothing:
#   --build-arg BASE_MODEL=<folder in this repo | hub id org/name> --build-arg ADAPTERS=<folder | none>
#   (a private hub model: --secret id=hf_token,env=HF_TOKEN)
# No `# syntax=` line and only the mount forms of Dockerfile 1.2, so that the engine's built-in
# frontend builds it too (Docker 20.10 with DOCKER_BUILDKIT=1, where no registry is reachable).
# Build-time pip settings (a CA bundle, find-links), only where the machine needs them:
#   --secret id=pip_conf,src=<pip.conf> [--secret id=pip_cert,src=<CA bundle>]
#   (`make image-test` writes them from this machine's `pip config`); never stored in a layer.
# Models on a network volume instead: bake the defaults and set FASTBACKEND_BASE_MODEL and
# FASTBACKEND_ADAPTERS_DIR on the endpoint to folders under /runpod-volume.

# CUDA base in the shape of RunPod's worker templates. torch's wheels bring their own CUDA
# libraries, so the image needs only the driver-facing base; PyPI's torch 2.13.0 is a CUDA 13.0
# build (hosts with a CUDA 13.0 driver: allowedCudaVersions in .runpod/hub.json).
ARG BASE_IMAGE=nvidia/cuda:13.0.1-base-ubuntu22.04

# --- runtime: Python 3.11 and the pinned runtime dependencies, installed at build time -----
FROM ${BASE_IMAGE} AS runtime
ARG TORCH_INDEX_URL=
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# libglib2.0-0: OpenCV (albumentations) needs libgthread even in its headless build.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
WORKDIR /app
# Only pyproject.toml here, so that editing code does not reinstall the ML stack.
COPY pyproject.toml /tmp/pyproject.toml
# torch ships Python 3.12-only test helpers (torch/testing/_internal/py312_intrinsics.py) that
# 3.11 never imports: such files stay source and are listed; everything else is compiled.
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_cert \
    if [ -f /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && if [ -n "${TORCH_INDEX_URL}" ]; then \
           pip install --index-url "${TORCH_INDEX_URL}" "$(grep '^torch==' /tmp/requirements.txt)"; \
       fi \
    && pip install -r /tmp/requirements.txt \
    && { python -m compileall -q -j 0 /opt/venv/lib > /tmp/compileall.log \
         || sed -n "s/^\*\*\* Error compiling '\(.*\)'.*/not compiled (not Python 3.11): \1/p" /tmp/compileall.log; } \
    && rm /tmp/requirements.txt /tmp/compileall.log
# Offline and quiet: a worker must never wait on the network (hub lookups, update checks).
ENV HF_HUB_OFFLINE=1 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    PYTHONUNBUFFERED=1

# --- models: the base model and adapters, resolved and checked at build time --------------
FROM runtime AS models
ARG BASE_MODEL=models/base
ARG ADAPTERS=models/adapters
WORKDIR /src
# The dev extra brings what building the demo models needs (scikit-learn's digits, papermill);
# none of it reaches the final image. Installed from pyproject.toml alone, before the sources,
# so that editing code does not reinstall it.
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_cert \
    if [ -f /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['optional-dependencies']['dev']))" \
        > /tmp/requirements-dev.txt \
    && pip install -r /tmp/requirements-dev.txt \
    && rm /tmp/requirements-dev.txt
COPY . /src
# HF_HUB_OFFLINE=0 only here, for a hub id; the token is a secret file, never a layer or an ARG.
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_cert --mount=type=secret,id=hf_token \
    if [ -f /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi \
    && if [ -f /run/secrets/hf_token ]; then export HF_TOKEN="$(cat /run/secrets/hf_token)"; fi \
    && pip install --no-deps -e . \
    && HF_HUB_OFFLINE=0 fastbackend bake --base-model "${BASE_MODEL}" --adapters "${ADAPTERS}" --output /models

# --- the worker ---------------------------------------------------------------------------
FROM runtime
COPY --from=models /models /app/models
COPY worker /app/worker
COPY exported /app/exported
# `docker run` with no arguments answers test_input.json and exits (RunPod's local test);
# on RunPod the worker takes jobs from the queue instead.
COPY test_input.json /app/test_input.json
# Bytecode now: without .pyc files every cold start compiles the ML stack (imports ~2x slower).
RUN python -m compileall -q -j 0 /app/worker /app/exported > /dev/null
# WORKDIR /app: the worker's defaults (models/base, models/adapters) are the baked models.
CMD ["python", "-u", "-m", "exported.handler"]
