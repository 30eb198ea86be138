"""`fastbackend batch`'s pure parts: packing under the body limit, error parsing, backoff, and the
resumable results file (a cut last line, never a line twice)."""

from __future__ import annotations

import json
import random

import pytest

from fastbackend.batch.plan import (
    BODY_MARGIN,
    Item,
    failed_index,
    pack,
    parse_error,
    plan_items,
    record,
    records_from_output,
)
from fastbackend.batch.results import ResultsFile, write_csv
from fastbackend.batch.runner import RetryPolicy


@pytest.fixture
def files(tmp_path):
    """Files of 3, 300 and 3,000 bytes (4, 400 and 4,000 base64 bytes)."""
    out = {}
    for name, size in (("a.png", 3), ("b.png", 300), ("c.png", 3000)):
        (tmp_path / "cls").mkdir(exist_ok=True)
        path = tmp_path / "cls" / name
        path.write_bytes(b"x" * size)
        out[name] = path
    return tmp_path, out


def test_plan_skips_what_is_done_and_maps_references(files):
    root, paths = files
    entries = [(paths["a.png"], "cls"), (paths["b.png"], "cls"), (paths["a.png"], "cls"), (paths["c.png"], "cls")]
    items, skipped = plan_items(entries, root, {"cls/b.png"}, by_reference=True, remote_root="/runpod-volume/data")
    assert skipped == 1 and [i.key for i in items] == ["cls/a.png", "cls/c.png"]  # and the duplicate once
    assert items[0].payload() == {"path": "/runpod-volume/data/cls/a.png"}
    items, _ = plan_items(entries, root, set(), by_reference=True)
    assert items[0].reference == "cls/a.png"  # relative to the worker's FASTBACKEND_INPUT_ROOT


def test_pack_respects_batch_size_and_the_body_limit(files):
    root, paths = files
    items, _ = plan_items([(p, "cls") for p in paths.values()] * 1, root, set())
    a, b, c = items
    assert [len(job) for job in pack([a, b, c] * 3, batch_size=4)[0]] == [4, 4, 1]
    limit = BODY_MARGIN + 4003 + 403  # room for c and b, not for a third
    jobs, too_large = pack([c, b, a], batch_size=10, limit=limit)
    assert [[i.key for i in job] for job in jobs] == [["cls/c.png", "cls/b.png"], ["cls/a.png"]] and not too_large
    jobs, too_large = pack([a, c, b], batch_size=10, limit=BODY_MARGIN + 1000)
    assert too_large == [c] and [[i.key for i in job] for job in jobs] == [["cls/a.png", "cls/b.png"]]


@pytest.mark.parametrize(
    "error, code, index",
    [
        ("IMAGE_DECODE_FAILED: images[3]: not a PNG or JPEG image", "IMAGE_DECODE_FAILED", 3),
        ("IMAGE_TOO_LARGE: images: over 8,000,000 bytes", "IMAGE_TOO_LARGE", 0),
        ("RATE_LIMITED: worker busy", "RATE_LIMITED", None),
        ('{"error_type": "<class \'ValueError\'>", "error_traceback": "..."}', None, None),
        ("IMAGE_FETCH_FAILED: images[9]: timed out", "IMAGE_FETCH_FAILED", None),  # only 4 images sent
    ],
)
def test_error_strings_parse_to_code_and_image(error, code, index):
    parsed_code, message = parse_error(error)
    assert parsed_code == code
    assert failed_index(message, 1 if "images:" in error else 4) == index


def test_backoff_is_jittered_and_capped():
    policy = RetryPolicy(base_delay_s=1, max_delay_s=5)
    rng = random.Random(1)
    delays = [policy.delay(attempt, rng) for attempt in (1, 2, 3, 10) for _ in range(200)]
    assert all(0 <= d <= 5 for d in delays) and max(delays[:200]) <= 1 and max(delays[600:]) > 4
    assert len({round(d, 6) for d in delays[:200]}) > 150, "jitter spreads the retries"


def test_a_completed_job_with_the_wrong_number_of_predictions_fails_each_image(files):
    root, paths = files
    items, _ = plan_items([(p, "cls") for p in paths.values()], root, set())
    rows = records_from_output(items, {"predictions": [{"label": "1"}]}, None, "job-1", 1)
    assert [r["code"] for r in rows] == ["JOB_LOST"] * 3 and "1 predictions for 3 images" in rows[0]["error"]


def _row(key, code=None):
    return record(Item(key, None, "x"), label=None if code else "1", code=code, error=code)  # type: ignore[arg-type]


def test_results_file_cuts_an_unfinished_line_and_never_writes_twice(tmp_path):
    path = tmp_path / "r.jsonl"
    results = ResultsFile(path)
    assert [r["path"] for r in results.append([_row("a"), _row("b", "IMAGE_DECODE_FAILED")])] == ["a", "b"]
    assert results.append([_row("a"), _row("c")]) == [_row("c")]  # a is already there
    results.close()
    with open(path, "ab") as handle:  # a killed writer's last, unfinished line
        handle.write(b'{"path": "d", "lab')
    reopened = ResultsFile(path)
    assert reopened.done == {"a", "b", "c"} and reopened.failed == {"b"} and reopened.repaired_bytes == 18
    reopened.append([_row("d")])
    assert reopened.forget_failures() == 1 and reopened.done == {"a", "c", "d"}
    reopened.close()
    assert [json.loads(line)["path"] for line in path.read_text().splitlines()] == ["a", "c", "d"]
    assert write_csv(path, tmp_path / "r.csv") == 3
    assert (tmp_path / "r.csv").read_text().splitlines()[0].startswith("path,true_label,label,score,top_k")
