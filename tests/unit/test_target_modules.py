"""One table of default LoRA target modules: notebook 03's export cell. docs/tasks/classification.md's support table and
the architectures the tests build are checked against it, so the three cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fixtures.architectures import ARCHITECTURES

from exported.train_adapter import DEFAULT_TARGET_MODULES, default_target_modules

ROOT = Path(__file__).resolve().parents[2]
# The support table's name for each `config.model_type`.
TITLES = {
    "vit": "ViT",
    "deit": "DeiT",
    "beit": "BEiT",
    "swin": "Swin",
    "convnext": "ConvNeXt",
    "convnextv2": "ConvNeXt V2",
    "resnet": "ResNet",
    "regnet": "RegNet",
    "dinov2": "Dinov2",
    "clip": "CLIP vision (`CLIPForImageClassification`)",
}


def readme_targets() -> dict[str, list[str]]:
    """Support table rows -> the backticked modules of the `target_modules` column (a trailing
    `(never ...)` note left out; `\\|` is a table-escaped `|`)."""
    text = (ROOT / "docs" / "tasks" / "classification.md").read_text()
    start = text.index("| architecture | processor | default LoRA `target_modules` |")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        targets = re.sub(r"\s*\(never .*\)$", "", cells[2]).replace("\\|", "|")
        rows[cells[0]] = re.findall(r"`([^`]+)`", targets)
    return rows


def test_architectures_built_by_the_tests_have_a_default():
    assert set(ARCHITECTURES) == set(DEFAULT_TARGET_MODULES) == set(TITLES)


@pytest.mark.parametrize("model_type", sorted(DEFAULT_TARGET_MODULES))
def test_readme_support_table_shows_the_notebook_default(model_type):
    targets = default_target_modules(model_type)
    assert readme_targets()[TITLES[model_type]] == ([targets] if isinstance(targets, str) else targets)


def test_readme_lists_no_default_the_notebook_lacks():
    documented = {title for title, targets in readme_targets().items() if targets}
    assert documented == set(TITLES.values())
