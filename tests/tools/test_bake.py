"""Baking models into the image (`fastbackend bake`, the Dockerfile's models stage)."""

from __future__ import annotations

import shutil

import pytest

from fastbackend.bake import DEFAULT_ADAPTERS, DEFAULT_BASE, BakeError, Source, bake, resolve


@pytest.mark.parametrize(
    "spec, default, hub, none, expected",
    [
        ("mine/base", DEFAULT_BASE, True, False, Source("folder")),
        (DEFAULT_BASE, DEFAULT_BASE, True, False, Source("demo")),  # missing from the context: built
        ("google/vit-base-patch16-224", DEFAULT_BASE, True, False, Source("hub", "google/vit-base-patch16-224")),
        ("none", DEFAULT_ADAPTERS, False, True, Source("none")),
        (DEFAULT_ADAPTERS, DEFAULT_ADAPTERS, False, True, Source("demo")),
    ],
)
def test_resolve(tmp_path, spec, default, hub, none, expected):
    (tmp_path / "mine" / "base").mkdir(parents=True)
    got = resolve(spec, default, tmp_path, allow_hub=hub, allow_none=none)
    assert got.kind == expected.kind and (expected.kind == "folder" or got.location == expected.location)


@pytest.mark.parametrize(
    "spec, hub, none",
    [
        ("none", True, False),  # a base is required
        ("org/adapter", False, True),  # adapters come from a folder, not the hub
        ("not a path/or id!", True, False),
    ],
)
def test_resolve_refuses(tmp_path, spec, hub, none):
    with pytest.raises(BakeError):
        resolve(spec, DEFAULT_BASE, tmp_path, allow_hub=hub, allow_none=none)


def test_demo_adapters_are_refused_on_another_base_before_any_download(tmp_path):
    with pytest.raises(BakeError, match="only fit the demo base"):
        bake("org/some-vit", DEFAULT_ADAPTERS, tmp_path, tmp_path / "out")


def test_folders_are_copied_and_checked(root, models_dir, tmp_path):
    base, adapters, names = bake(str(models_dir / "base"), str(models_dir / "adapters"), root, tmp_path / "out")
    assert (base.kind, adapters.kind) == ("folder", "folder") and names == ["inverted", "rot90"]
    assert (tmp_path / "out" / "base" / "model.safetensors").is_file()
    _, _, names = bake(str(models_dir / "base"), "none", root, tmp_path / "base-only")
    assert names == [] and (tmp_path / "base-only" / "adapters").is_dir()
    with pytest.raises(BakeError, match="not empty"):
        bake(str(models_dir / "base"), "none", root, tmp_path / "out")


def test_a_base_without_safetensors_weights_is_refused(models_dir, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(models_dir / "base" / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(BakeError, match="no \\*.safetensors"):
        bake(str(pickled), "none", tmp_path, tmp_path / "out")


def test_an_adapter_folder_missing_its_weights_is_refused(models_dir, tmp_path):
    adapters = tmp_path / "adapters"
    shutil.copytree(models_dir / "adapters", adapters)
    (adapters / "rot90" / "adapter_model.safetensors").unlink()
    with pytest.raises(BakeError, match="rot90: no adapter_model.safetensors"):
        bake(str(models_dir / "base"), str(adapters), tmp_path, tmp_path / "out")


# A third build of the demo models (nbval and the models fixture are the other two): make test-full.
@pytest.mark.full
def test_a_clean_clone_bakes_the_embedded_demo_models(root, tmp_path):
    """What `docker build` does from a fresh clone (no models/ in the context)."""
    context = tmp_path / "clone"
    (context / "notebooks").mkdir(parents=True)
    shutil.copy(root / "notebooks" / "00_demo_models.ipynb", context / "notebooks")
    small = {"base_epochs": 1, "adapter_epochs": 1, "adapter_tasks": ["inverted"]}  # the wiring, not the accuracy
    base, adapters, names = bake(DEFAULT_BASE, DEFAULT_ADAPTERS, context, tmp_path / "models", small)
    assert (base.kind, adapters.kind) == ("demo", "demo") and names == ["inverted"]
    assert (tmp_path / "models" / "base" / "model.safetensors").is_file()
