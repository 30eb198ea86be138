"""Where the base model's files are: a folder as given, or a hub id's snapshot in the local hub cache.

`FASTBACKEND_BASE_MODEL` may name a folder (an image's baked model, a network volume) or a
Hugging Face hub id (`org/name`). A hub id is served from the cache huggingface_hub writes
(HF_HOME / HF_HUB_CACHE: models--org--name/refs/main -> snapshots/<rev>/), downloading into it
only when the hub is not set offline; a missing entry is one line naming the id and the cache.
"""

from __future__ import annotations

import re
from pathlib import Path

from worker.errors import ModelLoadFailed

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(name: str) -> bool:
    """True when `name` has the shape of a hub id (org/name) rather than a path."""
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "/", "~"))


def local_model_dir(model: str) -> Path:
    """The folder holding `model`'s files: the path itself, or the cached snapshot of a hub id.

    Raises:
        ModelLoadFailed: a hub id that is not in the local cache (and cannot be downloaded).
    """
    path = Path(model).expanduser()
    if path.exists() or not is_hub_id(model):
        return path
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception as local_miss:
        if constants.HF_HUB_OFFLINE:
            raise ModelLoadFailed(
                f"{model}: no such folder, and not in the hub cache {constants.HF_HUB_CACHE} "
                f"(offline; {type(local_miss).__name__})"
            ) from None
    try:
        return Path(snapshot_download(model, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as exc:
        raise ModelLoadFailed(
            f"{model}: no such folder, not in the hub cache {constants.HF_HUB_CACHE}, and the download failed "
            f"({type(exc).__name__})"
        ) from None
