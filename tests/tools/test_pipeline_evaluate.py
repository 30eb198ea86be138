"""The `evaluate` pipeline records, for each adapter, the accuracy 02_inference.ipynb shows, and the
recall@1/@5 of the demo base's embeddings on the held-out digits.

"Shows" is what the notebook records when run as a user runs it (defaults: every adapter at
once); the pipeline runs it once per adapter (a sweep of `adapter`). Any difference is a bug:
the two are the same notebook on the same models.
"""

from __future__ import annotations

import json

import pytest

from fastbackend.notebooks import execute
from fastbackend.pipeline.runner import run_pipeline


# The whole evaluate pipeline (~1 min): make test-full; test_pipeline.py and nbval of 02 run in make test.
@pytest.mark.full
def test_evaluate_records_the_accuracy_the_inference_notebook_shows(root, models_dir, tmp_path):
    models = {"base_model": str(models_dir / "base"), "adapters_dir": str(models_dir / "adapters")}
    shown = execute(
        root / "notebooks" / "02_inference.ipynb", tmp_path / "02_inference.ipynb", models, cwd=root
    ).metrics
    adapters = sorted(p.name for p in (models_dir / "adapters").iterdir())
    assert len(adapters) >= 2

    run = run_pipeline(
        "evaluate",
        pipelines_file=root / "pipelines.yaml",
        parameters={**models, "adapter": adapters},
        runs_dir=tmp_path / "runs",
        progress=False,
    )

    assert run.ok, [r.failure for r in run.results]
    assert [r.label for r in run.results] == [f"adapter={a}" for a in adapters]
    for adapter, result in zip(adapters, run.results):
        recorded = json.loads((result.run_dir / "metrics.json").read_text())
        for metric in ("base_accuracy", f"{adapter}/base_accuracy", f"{adapter}/adapter_accuracy"):
            assert recorded[metric] == shown[metric], (adapter, metric)
        assert recorded[f"{adapter}/adapter_accuracy"] > recorded[f"{adapter}/base_accuracy"]
        assert sorted(p.name for p in result.run_dir.glob("*.ipynb")) == ["01_preprocess.ipynb", "02_inference.ipynb"]
        # the demo base's embeddings separate the held-out digits (as the served `embed` op answers them)
        assert recorded["embedding_recall_at_1"] >= 0.9 and recorded["embedding_recall_at_5"] >= 0.9, recorded


def test_the_base_alone_is_one_parameter(root, models_dir, tmp_path):
    """`base_only=True` scores the base with no adapter loaded, whatever adapters_dir holds (issue 31.6)."""
    models = {"base_model": str(models_dir / "base"), "adapters_dir": str(models_dir / "adapters")}
    done = execute(
        root / "notebooks" / "02_inference.ipynb",
        tmp_path / "02_inference.ipynb",
        {**models, "base_only": True, "adapter": "inverted"},
        cwd=root,
        figures=False,
    )
    assert "base_accuracy" in done.metrics
    assert not [key for key in done.metrics if "/" in key], done.metrics
    # and, by default, the recall of the demo base's embeddings: held-out digits against training ones
    assert done.metrics["embedding_recall_at_1"] >= 0.9, done.metrics
    assert done.metrics["embedding_recall_at_5"] >= done.metrics["embedding_recall_at_1"]
    assert done.metrics["embedding_dimensions"] == 64
