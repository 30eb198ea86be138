"""The Docker half of `make image-test`: a BuildKit client, a base image made from Debian's packages,
and `docker build` with this machine's pip settings passed as build secrets (never as a layer).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCAL_BASE = "fastbackend/bookworm-minbase:latest"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# The ids the Dockerfile mounts (RUN --mount=type=secret,id=...); tests/deploy/test_dockerfile.py checks both agree.
PIP_CONF_SECRET, PIP_CERT_SECRET = "pip_conf", "pip_cert"


class Missing(Exception):
    """Something this machine lacks (an engine, a tool): exit 2, one line saying what to do."""


class Failed(Exception):
    """The image failed a check: exit 1, one line (and the log's path)."""


def run_captured(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, **kwargs)


# -- 1. the engine -----------------------------------------------------------------------------
def find_docker() -> str:
    """A docker client whose `docker build` runs BuildKit, talking to a running engine.

    Newer clients (23+) build through the buildx plugin; older ones (Debian's 20.10) carry
    BuildKit's client themselves. `DOCKER` in the environment picks the client.
    """
    folders = os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"]
    candidates = [os.environ["DOCKER"]] if os.environ.get("DOCKER") else [os.path.join(f, "docker") for f in folders]
    found = list(dict.fromkeys(c for c in candidates if os.access(c, os.X_OK)))
    if not found:
        raise Missing(
            "make image-test needs Docker: install it (apt-get install docker.io, or Docker Desktop), start its engine"
        )
    for client in found:
        version = re.search(r"version (\d+)", run_captured([client, "--version"]).stdout)
        if version and (int(version.group(1)) < 23 or run_captured([client, "buildx", "version"]).returncode == 0):
            if run_captured([client, "info", "--format", "{{.ServerVersion}}"]).returncode != 0:
                raise Missing(f"no Docker engine answers {client}: start one (as root: dockerd > dockerd.log 2>&1 &)")
            return client
    raise Missing(f"no docker client here builds with BuildKit ({', '.join(found)}): install buildx or docker.io")


# -- 2. the base image -------------------------------------------------------------------------
def ensure_local_base(docker: str, log: Path) -> None:
    """Make LOCAL_BASE (Debian bookworm, minbase) from Debian's packages when it is missing."""
    if run_captured([docker, "image", "inspect", LOCAL_BASE]).returncode == 0:
        return
    if not shutil.which("debootstrap"):
        raise Missing(f"making the base image {LOCAL_BASE} needs debootstrap: apt-get install debootstrap")
    print(f"making {LOCAL_BASE} with debootstrap (a few minutes, once)", flush=True)
    with tempfile.TemporaryDirectory(prefix="fastbackend-rootfs-") as rootfs, open(log, "w") as sink:
        mirror = os.environ.get("DEBIAN_MIRROR", DEBIAN_MIRROR)
        made = subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", rootfs, mirror], stdout=sink, stderr=sink
        )
        if made.returncode != 0:
            raise Failed(f"debootstrap failed (exit {made.returncode}); log: {log}")
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run([docker, "import", "-", LOCAL_BASE], stdin=tar.stdout, capture_output=True, text=True)
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise Failed(f"docker import of the base failed: {imported.stderr.strip()}")


# -- 3. the build ------------------------------------------------------------------------------
def host_pip_settings() -> dict[str, str]:
    """This machine's effective pip settings (`pip config list`; the environment wins)."""
    listed = run_captured([sys.executable, "-m", "pip", "config", "list"]).stdout
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in listed.splitlines():
        scoped, _, value = line.partition("=")
        scope, _, key = scoped.rpartition(".")
        (env if scope.startswith(":env:") else files)[key] = value.strip().strip("'\"")
    return {**files, **env}


def _serve_folder(folder: str) -> http.server.ThreadingHTTPServer:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # pip's requests are not news
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@contextmanager
def pip_inputs(work: Path, settings: Mapping[str, str]) -> Iterator[list[str]]:
    """`--secret` arguments carrying this machine's pip CA bundle and find-links into the build.

    A find-links folder is served over loopback HTTP while the build runs (`--network host`),
    because a build cannot read host folders. Nothing when pip here needs neither.
    """
    conf, secrets, servers = ["[global]"], [], []
    cert = settings.get("cert")
    if cert and Path(cert).is_file():
        secrets += ["--secret", f"id={PIP_CERT_SECRET},src={cert}"]
        conf.append(f"cert = /run/secrets/{PIP_CERT_SECRET}")
    links = []
    for link in settings.get("find-links", "").split():
        folder = link.removeprefix("file://")
        if "://" not in folder and Path(folder).is_dir():
            servers.append(_serve_folder(folder))
            link = f"http://127.0.0.1:{servers[-1].server_address[1]}/"
        links.append(link)
    if links:
        conf.append("find-links = " + " ".join(links))
    try:
        if len(conf) > 1:
            (work / "pip.conf").write_text("\n".join(conf) + "\n")
            secrets += ["--secret", f"id={PIP_CONF_SECRET},src={work / 'pip.conf'}"]
        yield secrets
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def build(docker: str, root: Path, base: str, tag: str, secrets: list[str], log: Path) -> float:
    """`docker build` for CPU; prints each step as it starts; returns the seconds it took."""
    args = [docker, "build", "--progress=plain", "--network", "host", "--build-arg", f"BASE_IMAGE={base}"]
    args += [*secrets, "-t", tag, str(root)]
    started = time.monotonic()
    with open(log, "w") as sink:
        process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
        )
        for line in process.stdout or []:
            sink.write(line)
            if re.match(r"#\d+ \[", line) or "not compiled" in line or line.startswith("ERROR"):
                print("  " + line.rstrip()[:116], flush=True)
        process.wait()
    if process.returncode != 0:
        raise Failed(f"docker build failed (exit {process.returncode}); log: {log}")
    return time.monotonic() - started
