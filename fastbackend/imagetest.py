"""`make image-test`: build the serverless image on this machine and prove it answers jobs.

Not part of `make test` (needs a Docker engine; a first build downloads ~2 GB). In order,
stopping at the first failure with one line:

1. a Docker engine and a client whose BuildKit works (a pre-23 client, or one with buildx);
2. the base image: `BASE_IMAGE` when given, else a Debian bookworm made here with debootstrap
   (no registry needed) and imported once as `LOCAL_BASE`;
3. `docker build` of the Dockerfile for CPU; this machine's pip settings (CA bundle, find-links)
   reach pip inside the build as secrets, never as a layer (`pip_inputs`);
4. `docker run --rm --network none IMAGE` answers test_input.json as the host does;
5. the image's local API (`--rp_serve_api`, published on loopback) answers health, a predict with
   an adapter (equal to the host's answer) and three hostile inputs with their codes;
6. the image holds the runtime, the generated modules and the models, and no tools;
7. the image size and the cold start (spawn to first answer) in the container and on the host.

Everything it starts (HTTP servers, containers, processes) is stopped before it returns.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastbackend.bake import BakeError, check_adapters, check_base
from fastbackend.client import ClientError
from fastbackend.docker_build import (
    LOCAL_BASE,
    Failed,
    Missing,
    build,
    ensure_local_base,
    find_docker,
    host_pip_settings,
    pip_inputs,
    run_captured,
)
from fastbackend.local import (
    HANDLER_MODULE,
    HandlerCommand,
    LocalApi,
    LocalServer,
    free_port,
    parse_test_input,
    run_test_input,
    serve_args,
    stop_process,
)
from fastbackend.paths import project_root
from worker.errors import ErrorCode

IMAGE = "fastbackend-worker:image-test"
# Tools that only development uses; none may be installed in the image.
DEV_ONLY = ("papermill", "nbformat", "nbval", "jupyterlab", "pytest", "hypothesis", "playwright", "scikit-learn")
CONTAINER_PORT = 8000
STARTUP_TIMEOUT_S = 300


# -- 4, 5. answers -----------------------------------------------------------------------------
def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels: the worker must refuse it from the header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def hostile_jobs() -> dict[str, tuple[dict[str, Any], ErrorCode]]:
    """Name -> (job, the code the worker must answer with)."""
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return {
        "not an image": ({"input": {"images": b64(b"GIF? no, just bytes")}}, ErrorCode.IMAGE_DECODE_FAILED),
        "decompression bomb header": ({"input": {"images": b64(_png_header(60000, 60000))}}, ErrorCode.IMAGE_TOO_LARGE),
        "11 MB payload": ({"input": {"images": "A" * 11_000_000}}, ErrorCode.PAYLOAD_TOO_LARGE),
    }


def _output(answer: dict[str, Any], what: str) -> dict[str, Any]:
    output = answer.get("output")
    if answer.get("status") != "COMPLETED" or not isinstance(output, dict) or output.get("status") != "success":
        raise Failed(f"{what}: not answered with success: {json.dumps(answer)[:300]}")
    return output


def _first_prediction(output: dict[str, Any]) -> tuple[str, float]:
    first = output["predictions"][0]
    return first["label"], first["score"]


def test_input_in_image(docker: str, tag: str, host: tuple[str, float]) -> float:
    """`docker run --rm --network none IMAGE` answers test_input.json as the host does; seconds."""
    started = time.perf_counter()
    done = run_captured([docker, "run", "--rm", "--network", "none", tag], timeout=STARTUP_TIMEOUT_S)
    result = parse_test_input(done.returncode, time.perf_counter() - started, done.stdout + done.stderr)
    if result.returncode != 0 or not result.output:
        raise Failed(f"docker run --network none: exit {result.returncode}, {result.error or result.log[-300:]}")
    got = _first_prediction(result.output)
    if got[0] != host[0] or abs(got[1] - host[1]) > 1e-5:
        raise Failed(f"docker run --network none answered {got} for test_input.json; the host answers {host}")
    return result.seconds


@contextmanager
def container_api(docker: str, tag: str, log: Path) -> Iterator[tuple[LocalApi, float]]:
    """The image's local API published on a loopback port; yields (client, cold start seconds)."""
    port, name = free_port(), f"fastbackend-image-test-{os.getpid()}"
    serve = [*serve_args("0.0.0.0", CONTAINER_PORT), "--rp_log_level", "WARN"]
    args = [docker, "run", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:{CONTAINER_PORT}", tag]
    with open(log, "w") as sink:
        spawned = time.perf_counter()
        process = subprocess.Popen(
            [*args, "python", "-u", "-m", HANDLER_MODULE, *serve], stdout=sink, stderr=sink, start_new_session=True
        )
        try:
            api = LocalApi(f"http://127.0.0.1:{port}", pid=process.pid)
            while not api.ready():
                if process.poll() is not None or time.perf_counter() - spawned > STARTUP_TIMEOUT_S:
                    raise Failed(f"the container's local API never answered; log: {log}")
                time.sleep(0.1)
            _output(api.runsync({"input": {"op": "health"}}), "container health")
            yield api, time.perf_counter() - spawned
        finally:
            run_captured([docker, "rm", "--force", name])
            stop_process(process)


def host_cold_start(root: Path, adapter: str, image_b64: str) -> tuple[float, dict[str, Any]]:
    """The same on the host (the worktree's .venv): cold start seconds, and its predict answer."""
    with LocalServer(HandlerCommand.exported(root)) as server:
        if server.wait_ready(STARTUP_TIMEOUT_S) is None:
            raise Failed(f"the host's local API never answered: {server.log_tail(3)}")
        _output(server.api.runsync({"input": {"op": "health"}}), "host health")
        cold = time.perf_counter() - server.spawned
        return cold, _output(server.api.runsync({"input": {"images": image_b64, "adapter": adapter}}), "host predict")


# -- 6. contents -------------------------------------------------------------------------------
_INVENTORY = """
import importlib.metadata as md, importlib.util, json, pathlib
app = pathlib.Path('/app')
print(json.dumps({
    'app': sorted(p.name for p in app.iterdir()),
    'worker': sorted(p.name for p in (app / 'worker').glob('*.py')),
    'exported': sorted(p.name for p in (app / 'exported').glob('*.py')),
    'compiled': {d: sorted(p.name.split('.')[0] + '.py' for p in app.glob(d + '/__pycache__/*.pyc'))
                 for d in ('worker', 'exported')},
    'base': sorted(p.name for p in (app / 'models/base').iterdir()),
    'adapters': sorted(p.name for p in (app / 'models/adapters').iterdir()),
    'tools': importlib.util.find_spec('fastbackend') is not None,
    'dists': {d.metadata['Name'].lower(): d.version for d in md.distributions()},
}))
"""


def check_contents(docker: str, tag: str, root: Path) -> None:
    """Runtime + generated modules + models in /app, the pinned runtime installed, no tools."""
    done = run_captured([docker, "run", "--rm", "--network", "none", tag, "python", "-c", _INVENTORY])
    if done.returncode != 0:
        raise Failed(f"listing the image failed: {done.stderr.strip()[-300:]}")
    inv = json.loads(done.stdout)
    problems = []
    if inv["app"] != sorted(["exported", "models", "test_input.json", "worker"]):
        problems.append(f"/app holds {inv['app']}")
    for folder in ("worker", "exported"):
        shipped = sorted(p.name for p in (root / folder).glob("*.py"))
        if inv[folder] != shipped:
            problems.append(f"/app/{folder} holds {inv[folder]}, the repository {shipped}")
        if set(shipped) - set(inv["compiled"][folder]):
            problems.append(f"/app/{folder}: not compiled: {sorted(set(shipped) - set(inv['compiled'][folder]))}")
    if "config.json" not in inv["base"] or not any(n.endswith(".safetensors") for n in inv["base"]):
        problems.append(f"/app/models/base holds {inv['base']}")
    adapters = sorted(p.name for p in (root / "models/adapters").iterdir() if p.is_dir())
    if inv["adapters"] != adapters:
        problems.append(f"/app/models/adapters holds {inv['adapters']}, models/adapters {adapters}")
    if inv["tools"]:
        problems.append("the tools (fastbackend) are importable in the image")
    pins = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    for pin in pins:
        name, version = pin.split("==")
        if inv["dists"].get(name.lower(), "").split("+")[0] != version:
            problems.append(f"{pin} is not installed (found {inv['dists'].get(name.lower())})")
    problems += [f"development dependency {d} is installed" for d in DEV_ONLY if d in inv["dists"]]
    if problems:
        raise Failed("the image's contents: " + "; ".join(problems))


def _models_ready(models: Path) -> bool:
    """A base with config and weights and an adapters folder (an interrupted build leaves less)."""
    try:
        check_base(models / "base")
        return bool(check_adapters(models / "adapters"))
    except BakeError:
        return False


# -- the whole run -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make image-test", description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="", help=f"base image (default: {LOCAL_BASE}, made here when missing)")
    parser.add_argument("--tag", default=IMAGE)
    args = parser.parse_args(argv)
    root = project_root()
    work = root / "test-artifacts" / "image-test"
    work.mkdir(parents=True, exist_ok=True)
    try:
        docker = find_docker()
        if not _models_ready(root / "models"):
            print("models/ is missing: building the demo models (about a minute)", flush=True)
            cli = str(Path(sys.executable).parent / "fastbackend")
            built = run_captured([cli, "pipeline", "run", "demo-models", "-p", "output_dir=models"])
            if built.returncode != 0:
                raise Failed(f"building the demo models failed: {built.stderr.strip()[-300:]}")
        if not args.base:
            ensure_local_base(docker, work / "debootstrap.log")
        with (
            tempfile.TemporaryDirectory(prefix="fastbackend-pip-") as tmp,
            pip_inputs(Path(tmp), host_pip_settings()) as secrets,
        ):
            print(f"building {args.tag} on {args.base or LOCAL_BASE} (first build: ~2 GB of wheels)", flush=True)
            build_s = build(docker, root, args.base or LOCAL_BASE, args.tag, secrets, work / "build.log")
        test_job = json.loads((root / "test_input.json").read_text())
        image_b64 = test_job["input"]["images"]
        adapter = sorted(p.name for p in (root / "models/adapters").iterdir() if p.is_dir())[0]
        host = run_test_input(None, root, timeout=STARTUP_TIMEOUT_S)
        if host.returncode != 0 or not host.output:
            raise Failed(f"the host's own --test_input run failed: {host.error or host.log[-300:]}")
        run_s = test_input_in_image(docker, args.tag, _first_prediction(host.output))
        label = _first_prediction(host.output)[0]
        print(f"ok  docker run --rm --network none: test_input.json -> {label!r} (as on the host), {run_s:.1f} s")
        host_cold, host_predict = host_cold_start(root, adapter, image_b64)
        with container_api(docker, args.tag, work / "container-api.log") as (api, cold):
            print(f"ok  local API in the container: health answered {cold:.1f} s after docker run")
            predict = _output(api.runsync({"input": {"images": image_b64, "adapter": adapter}}), "predict")
            if _first_prediction(predict) != _first_prediction(host_predict) or predict["adapter"] != adapter:
                raise Failed(f"predict with {adapter}: {_first_prediction(predict)}, the host {host_predict}")
            print(f"ok  predict with adapter {adapter!r}: {_first_prediction(predict)[0]!r}, equal to the host's")
            for what, (job, code) in hostile_jobs().items():
                error = str(api.runsync(job).get("error", ""))
                if not error.startswith(f"{code.value}:"):
                    raise Failed(f"{what}: expected {code.value}, got {error[:200]!r}")
                print(f"ok  {what}: {code.value}")
        check_contents(docker, args.tag, root)
        print(
            "ok  contents: worker/, exported/ (compiled), models, test_input.json; runtime pins; no tools or dev deps"
        )
        size = int(run_captured([docker, "image", "inspect", "--format", "{{.Size}}", args.tag]).stdout.strip())
    except Missing as exc:
        print(f"image-test: {exc}", file=sys.stderr)
        return 2
    except (Failed, ClientError, subprocess.TimeoutExpired, RuntimeError) as exc:
        print(f"image-test FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"\nimage {args.tag}: {size / 1e9:.2f} GB (built in {build_s:.0f} s)")
    load = os.getloadavg()[0]  # the figures below mean little on a busy machine; say how busy
    print(f"cold start, spawn to first answer (local API, health; load {load:.1f} on {os.cpu_count()} CPUs):")
    print(f"  in the container {cold:6.1f} s\n  on the host      {host_cold:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
