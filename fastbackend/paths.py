"""Paths in notebooks mean the same wherever the kernel starts.

JupyterLab and nbval start a notebook's kernel in the notebook's folder, papermill wherever
it is told; a parameter like `base_model = "models/base"` is therefore read relative to the
project root (the nearest folder above the working directory holding pyproject.toml and
notebooks/), not to the working directory.
"""

from __future__ import annotations

from pathlib import Path


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: cwd) with pyproject.toml and notebooks/."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return here


def project_path(path: str | Path) -> Path:
    """An absolute path as is; a relative one under the project root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def base_model_dir(base_model: str | Path) -> Path:
    """The folder holding a base model's files, as the worker finds it: a folder (a relative one under
    the project root), or a hub id's snapshot in the local hub cache (worker.hub).

    Raises:
        ModelLoadFailed: a hub id that is not in the cache; names the id and the cache folder.
    """
    from worker.hub import is_hub_id, local_model_dir

    path = project_path(base_model)
    if path.exists() or not is_hub_id(str(base_model)):
        return path
    return local_model_dir(str(base_model))


def import_root(path: Path) -> Path:
    """The folder to put on sys.path so the file imports as part of its package."""
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder.parent != folder:
        folder = folder.parent
    return folder


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or path.stem
