#!/usr/bin/env bash
# Develop on a RunPod GPU pod (PyTorch template) or, with --local, on this machine (make lab):
# create the environment, register the Jupyter kernel, start JupyterLab with a token.
#
#   scripts/pod-setup.sh                  on a pod: JupyterLab on 0.0.0.0:8888
#   scripts/pod-setup.sh --local          here: JupyterLab on 127.0.0.1:8888 (what `make lab` runs)
#
# Options:
#   --port N       JupyterLab's port (default 8888)
#   --env KIND     venv (pip, .venv/) or conda (mamba/conda, .conda-env/); default: conda when
#                  mamba or conda is on PATH, else venv. --local always uses .venv (make venv).
#   --replace      stop a Jupyter server already on the port first (the PyTorch template
#                  starts its own on 8888)
#   --no-start     set up only; print the command that starts JupyterLab
# Environment:
#   JUPYTER_TOKEN    the token to log in with (default: a random one, printed)
#   PYTHON           the Python 3.11 to build .venv from (default: python3.11, else python3)
#   TORCH_INDEX_URL  a PyTorch wheel index for another CUDA build, e.g.
#                    https://download.pytorch.org/whl/cu128 on a pod whose driver predates CUDA 13
#
# Notebooks ask for the kernel "python3". This JupyterLab finds a "python3" of its own first
# (JUPYTER_PATH=<env>/lab/share/jupyter): "Python 3 (fastbackend)", the environment's Python,
# started in the repository root as papermill and `make run` run the notebooks, so relative
# paths such as models/base mean the same folder on every surface. The environment's default
# "python3" kernel, which papermill and nbval use, is left as it is.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODE=pod PORT=8888 ENV_KIND="" REPLACE=0 START=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --local) MODE=local ;;
        --port) PORT="${2:?--port needs a number}"; shift ;;
        --env) ENV_KIND="${2:?--env needs venv or conda}"; shift ;;
        --replace) REPLACE=1 ;;
        --no-start) START=0 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "pod-setup: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { printf '\033[1m[pod-setup]\033[0m %s\n' "$*"; }
die() { printf '[pod-setup] error: %s\n' "$*" >&2; exit 1; }

# -- 1. the environment --------------------------------------------------------------------
if [[ $MODE == local ]]; then
    ENV_KIND=venv
elif [[ -z $ENV_KIND ]]; then
    if command -v mamba > /dev/null || command -v conda > /dev/null; then ENV_KIND=conda; else ENV_KIND=venv; fi
fi

case "$ENV_KIND" in
    venv)
        PREFIX="$ROOT/.venv"
        PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
        [[ -n $PYTHON ]] || die "no Python found: install Python 3.11 (apt-get install python3.11 python3.11-venv) or use --env conda"
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
            || die "$PYTHON is not Python 3.11 (pyproject.toml pins it): set PYTHON=/path/to/python3.11 or use --env conda"
        if [[ -n ${TORCH_INDEX_URL:-} && ! -x $PREFIX/bin/python ]]; then
            say "torch from $TORCH_INDEX_URL"
            "$PYTHON" -m venv "$PREFIX"
            "$PREFIX/bin/python" -m pip install --quiet --index-url "$TORCH_INDEX_URL" "torch==2.13.0"
        fi
        say "environment: $PREFIX (pyproject.toml: runtime + dev extra)"
        if command -v make > /dev/null; then
            make --no-print-directory venv PYTHON="$PYTHON"
        else  # what `make venv` does, for images without make
            [[ -x $PREFIX/bin/python ]] || "$PYTHON" -m venv "$PREFIX"
            "$PREFIX/bin/python" -m pip install --quiet --upgrade pip
            "$PREFIX/bin/python" -m pip install --quiet -e '.[dev]'
            "$PREFIX/bin/python" -m compileall -q -j 0 "$PREFIX/lib" worker exported > /dev/null || true
        fi
        ;;
    conda)
        PREFIX="$ROOT/.conda-env"
        CONDA="$(command -v mamba || command -v conda || true)"
        [[ -n $CONDA ]] || die "--env conda: neither mamba nor conda is on PATH"
        if [[ -x $PREFIX/bin/python ]]; then
            say "environment: updating $PREFIX from environment.yml"
            "$CONDA" env update --quiet --prefix "$PREFIX" --file environment.yml --prune
        else
            say "environment: creating $PREFIX from environment.yml"
            "$CONDA" env create --quiet --prefix "$PREFIX" --file environment.yml
        fi
        ;;
    *) die "--env must be venv or conda, not $ENV_KIND" ;;
esac
PY="$PREFIX/bin/python"

if command -v nvidia-smi > /dev/null && ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2> /dev/null; then
    say "warning: this machine has a GPU but torch cannot use it. PyPI's torch 2.13.0 is a CUDA 13.0 build:"
    say "         pick a pod with CUDA 13.0+ (the console's CUDA filter), or rebuild the environment with"
    say "         TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (rm -r $PREFIX first)."
fi

# -- 2. the kernel -------------------------------------------------------------------------
register_kernel() {  # $1: kernel name, then where: --prefix PATH | --user
    local name="$1" dir
    shift
    dir="$("$PY" -m ipykernel install "$@" --name "$name" --display-name "Python 3 (fastbackend)" 2>&1 \
        | sed -n 's/^Installed kernelspec [^ ]* in //p')"
    [[ -n $dir && -f $dir/kernel.json ]] || die "registering the Jupyter kernel $name failed"
    # Start kernels in the repository root and as quiet and offline as the pipelines run them.
    "$PY" - "$dir/kernel.json" "$ROOT" <<'EOF'
import json, sys
path, root = sys.argv[1], sys.argv[2]
spec = json.load(open(path))
spec["argv"] = [a for a in spec["argv"] if not a.startswith("--IPKernelApp.exec_lines=")]
spec["argv"].append(f"--IPKernelApp.exec_lines=import os; os.chdir({root!r})")
spec["env"] = {"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
json.dump(spec, open(path, "w"), indent=1)
EOF
    say "kernel '$name' (Python 3 (fastbackend)): $dir"
}
LAB_DATA="$PREFIX/lab/share/jupyter"
register_kernel python3 --prefix "$PREFIX/lab"
if [[ $MODE == pod ]]; then
    # Also for Jupyter servers started elsewhere (the template's own): pick "Python 3 (fastbackend)".
    register_kernel fastbackend --user
fi
[[ -f models/base/model.safetensors ]] \
    || say "note: models/ is not built yet: run \`make run\` (or notebooks/00_demo_models.ipynb) before 02_inference"

# -- 3. JupyterLab -------------------------------------------------------------------------
HOST=127.0.0.1
[[ $MODE == pod ]] && HOST=0.0.0.0
TOKEN="${JUPYTER_TOKEN:-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')}"
LAB=("$PY" -m jupyterlab --no-browser --ip "$HOST" --port "$PORT" --ServerApp.port_retries=0
     --ServerApp.root_dir="$ROOT" --IdentityProvider.token="$TOKEN")
[[ $MODE == pod ]] && LAB+=(--ServerApp.allow_remote_access=True)
[[ $(id -u) == 0 ]] && LAB+=(--allow-root)
export JUPYTER_PATH="$LAB_DATA${JUPYTER_PATH:+:$JUPYTER_PATH}"

if [[ $START == 0 ]]; then
    say "set up. Start JupyterLab with:"
    echo "JUPYTER_PATH=$JUPYTER_PATH ${LAB[*]}"
    exit 0
fi

port_busy() { "$PY" -c 'import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$1"; }
if port_busy "$PORT"; then
    if [[ $REPLACE == 1 ]]; then
        say "stopping the Jupyter server on port $PORT"
        "$PY" -m jupyter_server stop "$PORT" || die "could not stop what listens on $PORT: stop it yourself"
        for _ in $(seq 50); do port_busy "$PORT" || break; sleep 0.2; done
        ! port_busy "$PORT" || die "port $PORT is still taken"
    else
        die "port $PORT is taken (on RunPod's PyTorch template: its own JupyterLab). Pass --replace to stop it, \
--port N for another exposed port, or open that JupyterLab and pick the kernel \"Python 3 (fastbackend)\""
    fi
fi

URL="http://127.0.0.1:$PORT"
[[ $MODE == pod && -n ${RUNPOD_POD_ID:-} ]] && URL="https://$RUNPOD_POD_ID-$PORT.proxy.runpod.net"
say "JupyterLab on $HOST:$PORT; open:"
say "  $URL/lab/tree/notebooks/02_inference.ipynb?token=$TOKEN"
exec "${LAB[@]}"
