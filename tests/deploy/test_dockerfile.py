"""The serverless image, checked without a Docker engine: the Dockerfile's properties, the
.dockerignore, `make image`, and the final stage's layout actually answering a job."""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fastbackend.bake import DEFAULT_ADAPTERS, DEFAULT_BASE, bake
from fastbackend.client import open_url
from fastbackend.docker_build import PIP_CERT_SECRET, PIP_CONF_SECRET, pip_inputs
from worker.config import WorkerConfig


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def lineage(self, stage: Stage) -> list[Stage]:
        """The stage and the named stages it is built FROM, oldest first."""
        chain = [stage]
        while any(s.name == chain[0].base for s in self.stages):
            chain.insert(0, self.stage(chain[0].base))
        return chain


def parse(text: str) -> Dockerfile:
    """Instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    logical, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        pending += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            logical.append(" ".join(pending.split()))
            pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for entry in logical:
        keyword, _, args = entry.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None))
        elif not stages and keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append((keyword, args))
    return Dockerfile(global_args, stages)


def env_of(docker: Dockerfile, stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for s in docker.lineage(stage):
        for args in s.all("ENV"):
            env.update(pair.split("=", 1) for pair in args.split() if "=" in pair)
    return env


@pytest.fixture(scope="module")
def docker(root) -> Dockerfile:
    return parse((root / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def final(docker) -> Stage:
    return docker.stages[-1]


def test_base_image_is_a_cuda_or_runpod_pytorch_image(docker):
    base = docker.stages[0].base.replace("${BASE_IMAGE}", docker.global_args["BASE_IMAGE"])
    assert re.match(r"^(nvidia/cuda|runpod/(base|pytorch)|pytorch/pytorch):[\w.-]+$", base), base
    assert [s.name for s in docker.stages] == ["runtime", "models", None]
    assert docker.stages[-1].base == "runtime", "the final image starts from the runtime stage, not the builder"


def _extracted_pins(root: Path, run: str) -> list[str]:
    """Run the Dockerfile's own `python -c` extraction against this pyproject."""
    script = shlex.split(re.search(r'python -c ("(?:[^"\\]|\\.)*")', run).group(1))[0]
    script = script.replace("/tmp/pyproject.toml", str(root / "pyproject.toml"))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()


def test_runtime_dependencies_are_the_pinned_ones_from_pyproject_installed_at_build_time(root, docker):
    runtime = docker.stage("runtime")
    assert "pyproject.toml /tmp/pyproject.toml" in runtime.all("COPY")
    install = " ".join(runtime.all("RUN"))
    assert "pip install -r /tmp/requirements.txt" in install
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    pins = project["dependencies"]
    assert _extracted_pins(root, install) == pins and all("==" in pin for pin in pins)
    # The dev extra (what baking the demo models needs) only in the throwaway models stage.
    (dev_install,) = [run for run in docker.stage("models").all("RUN") if "requirements-dev.txt" in run]
    assert _extracted_pins(root, dev_install) == project["optional-dependencies"]["dev"]
    assert "optional-dependencies" not in install


def test_the_engines_built_in_frontend_can_build_it(root, docker):
    """No registry here: no `# syntax=` frontend image to pull, so only Dockerfile 1.2 mount
    options (Docker 20.10's built-in frontend has no secret `env=`)."""
    text = (root / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    known = {"type", "id", "target", "dst", "destination", "source", "src", "from", "required", "mode", "uid", "gid"}
    known |= {"readonly", "ro", "rw", "readwrite", "sharing"}
    for stage in docker.stages:
        for run in stage.all("RUN"):
            for mount in re.findall(r"--mount=(\S+)", run):
                keys = {option.split("=", 1)[0] for option in mount.split(",")}
                assert keys <= known, f"--mount={mount}: {sorted(keys - known)} needs a newer frontend"


def test_every_pip_step_gets_the_build_machines_pip_settings_as_secrets(docker):
    """`make image-test` passes the CA bundle and find-links as secrets with these ids; pip
    reads them only while its step runs, so they never reach a layer."""
    pip_runs = [run for stage in docker.stages for run in stage.all("RUN") if "pip install" in run]
    assert len(pip_runs) == 3
    for run in pip_runs:
        assert f"--mount=type=secret,id={PIP_CONF_SECRET}" in run and f"--mount=type=secret,id={PIP_CERT_SECRET}" in run
        assert f"export PIP_CONFIG_FILE=/run/secrets/{PIP_CONF_SECRET}" in run
    settings = " ".join(args for stage in docker.stages for kw, args in stage.instructions if kw in ("ARG", "ENV"))
    assert "PIP_CERT" not in settings and "FIND_LINKS" not in settings and "PIP_CONFIG_FILE" not in settings


def test_pip_inputs_serve_find_links_folders_and_pass_the_ca_bundle_only_while_building(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo-1.0-py3-none-any.whl").write_bytes(b"not really a wheel")
    cert = tmp_path / "ca.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = {"cert": str(cert), "find-links": f"file://{wheels} https://example.org/wheels/"}
    with pip_inputs(tmp_path, settings) as secrets:
        conf = (tmp_path / "pip.conf").read_text()
        assert secrets == [
            "--secret",
            f"id={PIP_CERT_SECRET},src={cert}",
            "--secret",
            f"id={PIP_CONF_SECRET},src={tmp_path / 'pip.conf'}",
        ]
        assert f"cert = /run/secrets/{PIP_CERT_SECRET}" in conf
        url = re.search(r"find-links = (http://127\.0\.0\.1:\d+/) https://example.org/wheels/", conf).group(1)
        with open_url(url + "demo-1.0-py3-none-any.whl", 5) as served:
            assert served.read() == b"not really a wheel"
    with pytest.raises(OSError):
        open_url(url, 2)
    with pip_inputs(tmp_path / "none", {}) as secrets:
        assert secrets == []  # a clean machine: pip inside the build uses its defaults


def test_compiling_the_venv_tolerates_files_that_are_not_python_311(docker, tmp_path):
    """The runtime stage's own compile command, run on a tree holding a 3.12-only file (as torch ships)."""
    (run,) = [r for r in docker.stage("runtime").all("RUN") if "compileall" in r]
    command = run[run.index("{ python -m compileall") : run.index("&& rm")].replace("/opt/venv/lib", str(tmp_path))
    (tmp_path / "good.py").write_text("x = 1\n")
    (tmp_path / "py312_intrinsics.py").write_text("type Alias = int\n")
    done = subprocess.run(
        [
            "bash",
            "-o",
            "pipefail",
            "-c",
            command.replace("/tmp/compileall.log", str(tmp_path / "log")).replace("python -m", f"{sys.executable} -m"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"not compiled (not Python 3.11): {tmp_path / 'py312_intrinsics.py'}"
    assert [p.name.split(".")[0] for p in (tmp_path / "__pycache__").iterdir()] == ["good"]


def test_nothing_is_installed_or_downloaded_at_run_time(docker, final):
    assert not any(s.all("ENTRYPOINT") for s in docker.stages)
    (cmd,) = final.all("CMD")
    assert not re.search(r"pip|apt|curl|wget|download", cmd)


def test_cmd_starts_the_generated_handler_unbuffered_in_exec_form(final):
    assert json.loads(final.all("CMD")[0]) == ["python", "-u", "-m", "exported.handler"]


def test_final_stage_copies_the_code_and_the_baked_models(docker, final):
    copies = final.all("COPY")
    assert "worker /app/worker" in copies and "exported /app/exported" in copies
    assert "--from=models /models /app/models" in copies
    assert docker.stage("runtime").all("WORKDIR") == ["/app"] and not final.all("WORKDIR")
    # The worker's default config then points at the baked models.
    config = WorkerConfig()
    assert (config.base_model, config.adapters_dir) == ("models/base", "models/adapters")
    assert not any(k.startswith("FASTBACKEND_") for k in env_of(docker, final))


def test_models_are_baked_from_a_build_argument_defaulting_to_the_embedded_demo(docker):
    models = docker.stage("models")
    args = dict(a.split("=", 1) for a in models.all("ARG"))
    assert args == {"BASE_MODEL": DEFAULT_BASE, "ADAPTERS": DEFAULT_ADAPTERS}
    run = " ".join(models.all("RUN"))
    assert 'fastbackend bake --base-model "${BASE_MODEL}" --adapters "${ADAPTERS}" --output /models' in run
    assert "type=secret,id=hf_token" in run, "a private hub model needs a token that stays out of the layers"


def test_bytecode_is_compiled_after_the_code_is_copied(docker, final):
    order = [kw + " " + args for kw, args in final.instructions]
    compile_at = next(i for i, line in enumerate(order) if "compileall" in line)
    assert compile_at > max(order.index("COPY worker /app/worker"), order.index("COPY exported /app/exported"))
    assert "/app/worker /app/exported" in order[compile_at]
    assert any("compileall" in run and "/opt/venv/lib" in run for run in docker.stage("runtime").all("RUN"))


def test_the_worker_runs_offline(docker, final):
    env = env_of(docker, final)
    assert env["HF_HUB_OFFLINE"] == "1" and env["NO_ALBUMENTATIONS_UPDATE"] == "1"
    assert "PYTHONDONTWRITEBYTECODE" not in env


def test_every_copied_source_exists(root, docker):
    for stage in docker.stages:
        for args in stage.all("COPY"):
            parts = [p for p in args.split() if not p.startswith("--")]
            if args.startswith("--from"):
                continue
            for source in parts[:-1]:
                assert (root / source).exists(), f"COPY {source}: not in the repository"


def _ignored(patterns: list[str], path: str) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        pattern = pattern[3:] if pattern.startswith("**/") else pattern
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        candidates = prefixes + ["/".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)]
        if any(fnmatch.fnmatchcase(c, pattern) for c in (candidates if "/" not in pattern else prefixes)):
            ignored = not negate
    return ignored


@pytest.mark.parametrize(
    "path, ignored",
    [
        (".venv/bin/python", True),
        ("runs/20260101T000000Z-run/metrics.json", True),
        (".git/HEAD", True),
        ("test-artifacts/lab.png", True),
        ("notebooks/02_inference-fig1.png", True),
        ("worker/__pycache__/config.cpython-311.pyc", True),
        ("notebooks/.ipynb_checkpoints/x.ipynb", True),
        ("worker/config.py", False),
        ("exported/handler.py", False),
        ("pyproject.toml", False),
        ("notebooks/00_demo_models.ipynb", False),
        ("test_input.json", False),
        ("models/base/config.json", False),
    ],
)
def test_dockerignore_keeps_out_envs_runs_and_outputs_but_not_what_the_build_needs(root, path, ignored):
    patterns = [
        p.strip() for p in (root / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    assert _ignored(patterns, path) == ignored


def test_make_image_builds_with_the_build_arguments(root):
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    dry = subprocess.run(
        ["make", "-n", "image", "IMAGE=me/fb:1", "BASE_MODEL=org/vit", "ADAPTERS=none"],
        cwd=root,
        capture_output=True,
        text=True,
        env=env,
    )
    assert dry.returncode == 0, dry.stderr
    assert re.search(r"docker build .*--platform linux/amd64 .*-t me/fb:1", dry.stdout)
    assert "--build-arg BASE_MODEL=org/vit" in dry.stdout and "--build-arg ADAPTERS=none" in dry.stdout
    assert "--secret" not in dry.stdout
    private = subprocess.run(
        ["make", "-n", "image"], cwd=root, capture_output=True, text=True, env={**env, "HF_TOKEN": "hf_secret_value"}
    )
    assert "--secret id=hf_token,env=HF_TOKEN" in private.stdout and "hf_secret_value" not in private.stdout
    check = subprocess.run(
        ["make", "-n", "image-test", "BASE_IMAGE=org/base:1"], cwd=root, capture_output=True, text=True
    )
    assert re.search(r"python -m fastbackend.imagetest --base org/base:1$", check.stdout, re.MULTILINE), check.stdout


def test_the_final_stage_layout_answers_test_input_with_the_default_config(root, models_dir, docker, final, tmp_path):
    """Lay out /app as the final stage does and run its CMD there: the baked models and the
    worker's defaults must meet, with no FASTBACKEND_* variable set."""
    app = tmp_path / "app"
    bake(str(models_dir / "base"), str(models_dir / "adapters"), root, app / "models")
    for args in final.all("COPY"):
        if not args.startswith("--from"):
            source, target = args.split()
            copy = shutil.copytree if (root / source).is_dir() else shutil.copy
            copy(root / source, app / Path(target).relative_to("/app"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTBACKEND_")}
    env.update(env_of(docker, final), RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true", PATH=os.environ["PATH"])
    command = json.loads(final.all("CMD")[0])
    done = subprocess.run([sys.executable, *command[1:]], cwd=app, env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert '"event":"setup.done"' in log and str(app / "models") not in log  # relative defaults, no paths
    result = ast.literal_eval(log.split("Job result: ", 1)[1].splitlines()[0])
    assert result["output"]["predictions"][0]["label"] == "6"
