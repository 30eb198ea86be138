"""1,000 zero-shot jobs (20 in make test) naming the same ten labels tokenise them once (the label-embedding cache)."""

from __future__ import annotations

import pytest
from fixtures.clip_models import build
from fixtures.photos import jpeg_b64, variants

pytest.importorskip("worker.tasks.base", reason="needs the task seam (branch seam)")

LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.mark.parametrize("jobs", [pytest.param(1000, marks=pytest.mark.full), 20])
def test_jobs_with_the_same_labels_tokenise_once(tmp_path, jobs):
    from exported.handler import WORKER as GENERATED
    from worker.config import WorkerConfig
    from worker.runtime import Worker

    worker = Worker(GENERATED.functions)
    worker.setup(WorkerConfig(base_model=str(build("clip", tmp_path / "base")), adapters_dir=str(tmp_path / "none")))
    image = jpeg_b64(variants(full=False)["china-small"])
    first = None
    for i in range(jobs):
        answer = worker.handle({"id": str(i), "input": {"images": image, "candidate_labels": LABELS}})
        assert answer["status"] == "success", answer
        first = first or answer["predictions"]
        assert answer["predictions"] == first
    other = worker.handle({"id": "x", "input": {"images": image, "candidate_labels": LABELS[:5]}})
    assert other["status"] == "success"
    cache = worker.handle({"id": "h", "input": {"op": "health"}})["task"]["label_cache"]
    assert cache == {"tokenizations": 2, "hits": jobs - 1, "entries": 2}
