"""Baking the base model and adapters into the serverless image, so a cold start downloads nothing.

Run by the Dockerfile's `models` stage (`fastbackend bake`). Each of `--base-model` and
`--adapters` is one of:

- a folder in the build context (`models/base`, `my-models/vit-lora`), copied as is;
- a hub id (`org/name`, base model only), downloaded at build time, safetensors only;
- the default (`models/base`, `models/adapters`) when that folder is missing: the embedded
  demo models, built by notebooks/00_demo_models.ipynb as `make run` builds them;
- `none` (adapters only): an image that serves the base model alone.

The result is checked before the image is finished: a base needs `config.json` and
safetensors weights, each adapter `adapter_config.json` and `adapter_model.safetensors`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_BASE = "models/base"
DEFAULT_ADAPTERS = "models/adapters"
NONE = "none"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Weights in safetensors only (the loader refuses pickles), plus configs and processor files.
HUB_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model")


class BakeError(Exception):
    """A model source cannot be baked; the message names it and says what is accepted."""


@dataclass(frozen=True)
class Source:
    """Where one part of the models comes from: `folder`, `hub`, `demo` or `none`."""

    kind: str
    location: str = ""


def resolve(spec: str, default: str, context: Path, allow_hub: bool, allow_none: bool) -> Source:
    """Decide where a `--base-model`/`--adapters` value points, without touching the network.

    Raises:
        BakeError: the value is none of the accepted forms.
    """
    spec = spec.strip()
    if spec.lower() in ("", NONE):
        if allow_none:
            return Source("none")
        raise BakeError("a base model is required: a folder in the build context or a hub id")
    folder = Path(spec) if Path(spec).is_absolute() else context / spec
    if folder.is_dir():
        return Source("folder", str(folder))
    if spec.rstrip("/") == default:
        return Source("demo")
    if allow_hub and _HUB_ID.match(spec):
        return Source("hub", spec)
    accepted = (
        "a folder in the build context"
        + (", a hub id (org/name)" if allow_hub else "")
        + (f" or '{NONE}'" if allow_none else "")
    )
    raise BakeError(f"{spec!r} is not {accepted}")


def check_base(folder: Path) -> None:
    """Raises BakeError unless `folder` holds a config and safetensors weights."""
    if not (folder / "config.json").is_file():
        raise BakeError(f"{folder}: no config.json")
    if not any(folder.glob("*.safetensors")):
        raise BakeError(f"{folder}: no *.safetensors weights (other weight formats are refused)")


def check_adapters(folder: Path) -> list[str]:
    """The adapter names in `folder`; raises BakeError for a subfolder that is not one."""
    names = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        for needed in ("adapter_config.json", "adapter_model.safetensors"):
            if not (sub / needed).is_file():
                raise BakeError(f"{sub}: no {needed}")
        names.append(sub.name)
    return names


def _build_demo(context: Path, work: Path, parameters: Mapping[str, Any]) -> Path:
    from fastbackend.mainjob import DEMO_NOTEBOOK
    from fastbackend.notebooks import execute

    out = work / "demo"
    execute(context / DEMO_NOTEBOOK, work / "00_demo_models.ipynb", {**parameters, "output_dir": str(out)}, cwd=context)
    return out


def _download(repo_id: str, dest: Path) -> None:
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id, local_dir=str(dest), allow_patterns=list(HUB_PATTERNS))
    except Exception as exc:  # the hub client raises many types; all mean "not baked"
        raise BakeError(f"downloading {repo_id!r} failed: {exc} (private model? pass an HF token secret)") from exc


def bake(
    base_spec: str, adapters_spec: str, context: Path, dest: Path, demo_parameters: Mapping[str, Any] | None = None
) -> tuple[Source, Source, list[str]]:
    """Put the base model in `dest/base` and the adapters in `dest/adapters`, and check them.

    Args:
        base_spec: a folder in `context`, a hub id, or DEFAULT_BASE (built when missing).
        adapters_spec: a folder in `context`, `none`, or DEFAULT_ADAPTERS (built when missing).
        context: the build context (the repository root in a clean clone).
        dest: the folder the image serves from (it must not exist yet or be empty).
        demo_parameters: papermill parameters for the demo build (tests make it smaller).

    Returns:
        (base source, adapters source, adapter names).

    Raises:
        BakeError: a source is not accepted, cannot be fetched, or is not a model.
    """
    base = resolve(base_spec, DEFAULT_BASE, context, allow_hub=True, allow_none=False)
    adapters = resolve(adapters_spec, DEFAULT_ADAPTERS, context, allow_hub=False, allow_none=True)
    if adapters.kind == "demo" and base.kind != "demo":
        # Built adapters are trained on the demo base built with them; on any other base
        # the worker would refuse them at startup (fingerprint mismatch).
        raise BakeError(
            f"{DEFAULT_ADAPTERS} is missing and the demo adapters only fit the demo base: "
            f"pass ADAPTERS=<folder with your adapters> or ADAPTERS={NONE}"
        )
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise BakeError(f"{dest} is not empty")
    with tempfile.TemporaryDirectory() as tmp:
        demo = _build_demo(context, Path(tmp), demo_parameters or {}) if "demo" in (base.kind, adapters.kind) else None
        if base.kind == "hub":
            _download(base.location, dest / "base")
        else:
            shutil.copytree(demo / "base" if base.kind == "demo" else Path(base.location), dest / "base")
        if adapters.kind == "none":
            (dest / "adapters").mkdir()
        else:
            shutil.copytree(
                demo / "adapters" if adapters.kind == "demo" else Path(adapters.location), dest / "adapters"
            )
    check_base(dest / "base")
    return base, adapters, check_adapters(dest / "adapters")
