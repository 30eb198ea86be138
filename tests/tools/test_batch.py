"""`fastbackend batch` against the fake RunPod API with injected faults: every image ends in the
results file exactly once, as a result or as a failure with its code."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import random

import numpy as np
import pytest
from fixtures.fake_runpod import API_KEY, ENDPOINT, FakeQueue, Faults, fake_label, serve
from PIL import Image

from fastbackend.batch.engine import BatchOptions, exit_code, run_batch
from fastbackend.batch.runner import RetryPolicy
from fastbackend.cli import main
from fastbackend.client import ApiClient, Target

N_IMAGES = 60
FAST = RetryPolicy(max_attempts=5, base_delay_s=0.01, max_delay_s=0.05, job_timeout_s=0.5, poll_interval_s=0.01)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """59 small PNGs in 3 class folders, and one PNG cut short."""
    root = tmp_path_factory.mktemp("batch") / "data"
    keys = {}  # the base64 each image is sent as -> its key in the results
    for i in range(N_IMAGES - 1):
        label = f"class{i % 3}"
        (root / label).mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        Image.fromarray(np.full((8, 8), i * 4, dtype=np.uint8)).save(buffer, format="PNG")
        (root / label / f"{i:03d}.png").write_bytes(buffer.getvalue())
        keys[base64.b64encode(buffer.getvalue()).decode()] = f"{label}/{i:03d}.png"
    cut = buffer.getvalue()[:-20]  # a PNG cut short: its header reads, its pixels do not
    (root / "class0" / "broken.png").write_bytes(cut)
    keys[base64.b64encode(cut).decode()] = "class0/broken.png"
    return root, keys


def start(faults: Faults):
    fake = FakeQueue(faults=faults)
    return fake, serve(fake)


@contextlib.contextmanager
def fake_queue(faults: Faults):
    """A fake endpoint with these faults, served until the block ends."""
    fake, server = start(faults)
    try:
        yield fake
    finally:
        server.shutdown()


def run(fake, dataset_root, out, on_written=None, **overrides):
    values = {"batch_size": 4, "progress": False, "retry": FAST, **overrides}
    options = BatchOptions(dataset=dataset_root, out=out, target=Target.endpoint(ENDPOINT, API_KEY, fake.url), **values)
    client = ApiClient(options.target, timeout=5)
    return run_batch(options, io.StringIO(), client=client, on_written=on_written)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_exactly_once(rows, keys):
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)), "a line written twice"
    assert set(paths) == set(keys.values()), "an image lost"


def test_every_fault_ends_with_each_image_exactly_once(dataset, tmp_path):
    root, keys = dataset
    faults = Faults(
        http={2: 500, 5: 429, 9: 503, 21: 502},  # on /run: retried; on /status: polled again
        drop={14, 30},  # no answer at all
        failed={3: "RATE_LIMITED: worker busy (4 jobs in flight); retry shortly", 10: "UNKNOWN_ADAPTER: no 'x'"},
        stuck={6},  # IN_PROGRESS past the job timeout: cancelled on RunPod, sent again
        lost={8},  # /status 404: the worker was recycled
    )
    with fake_queue(faults) as fake:
        summary = run(fake, root, tmp_path / "results.jsonl", concurrency=1)
    rows = lines(tmp_path / "results.jsonl")
    print("\n" + "\n".join(summary.lines()))
    assert_exactly_once(rows, keys)
    by_code = {}
    for row in rows:
        by_code.setdefault(row["code"], []).append(row["path"])
    assert by_code["IMAGE_DECODE_FAILED"] == ["class0/broken.png"]
    lost_to_adapter = {keys[image] for image in fake.jobs["job-10"]["input"]["images"]}
    assert set(by_code["UNKNOWN_ADAPTER"]) == lost_to_adapter and len(lost_to_adapter) >= 1
    assert set(by_code) == {None, "IMAGE_DECODE_FAILED", "UNKNOWN_ADAPTER"}
    for row in rows:
        if row["code"] is None:  # the fake's prediction for exactly the image this line names
            sent = next(b64 for b64, key in keys.items() if key == row["path"])
            assert row["label"] == fake_label(sent) and row["job_id"].startswith("job-")
    assert {"RATE_LIMITED", "JOB_TIMEOUT", "JOB_LOST"} <= set(summary.retries), summary.retries
    assert "job-6" in fake.cancelled, "a job past its timeout is cancelled on RunPod"
    assert max(row["attempt"] for row in rows) >= 2
    assert summary.written_ok + summary.written_failed == N_IMAGES and exit_code(summary) == 1
    assert summary.failed_by_code == {"UNKNOWN_ADAPTER": len(lost_to_adapter), "IMAGE_DECODE_FAILED": 1}


def test_random_faults_with_concurrency_still_write_each_image_once(dataset, tmp_path):
    root, keys = dataset
    rng = random.Random(7)
    faults = Faults(
        http={n: rng.choice([429, 500, 503]) for n in rng.sample(range(1, 120), 20)},
        drop=set(rng.sample(range(1, 120), 8)),
        failed={n: "RATE_LIMITED: busy" for n in rng.sample(range(1, 20), 3)},
        stuck=set(rng.sample(range(1, 20), 2)),
        lost=set(rng.sample(range(1, 20), 2)),
    )
    with fake_queue(faults) as fake:
        summary = run(fake, root, tmp_path / "results.jsonl", concurrency=4)
    rows = lines(tmp_path / "results.jsonl")
    print("\n" + "\n".join(summary.lines()))
    assert_exactly_once(rows, keys)
    failed = {row["path"]: row["code"] for row in rows if row["code"]}
    assert failed.pop("class0/broken.png") == "IMAGE_DECODE_FAILED"
    assert all(code for code in failed.values())  # anything else that failed says why (attempts ran out)
    fired = [n for n in (*faults.http, *faults.drop) if n <= fake.requests]
    assert len(fired) >= 20 and sum(summary.retries.values()) >= 8, (fired, summary.retries)


def test_ctrl_c_cancels_jobs_in_flight_and_a_rerun_finishes_exactly_once(dataset, tmp_path):
    root, keys = dataset
    fake, server = start(Faults(stuck={3, 4, 5}))
    out = tmp_path / "results.jsonl"

    pressed = []

    def interrupt_after_first_job(written):  # Ctrl-C, once, after the first job is written
        if written and not pressed:
            pressed.append(True)
            raise KeyboardInterrupt

    try:
        slow = RetryPolicy(max_attempts=5, base_delay_s=0.01, job_timeout_s=30, poll_interval_s=0.01)
        summary = run(fake, root, out, concurrency=4, retry=slow, on_written=interrupt_after_first_job)
        assert summary.interrupted and exit_code(summary) == 130
        first = lines(out)
        assert 0 < len(first) < N_IMAGES
        in_flight = {job_id for job_id, job in fake.jobs.items() if job["n"] in (3, 4, 5)}
        assert in_flight and in_flight <= set(fake.cancelled), "jobs in flight are cancelled on Ctrl-C"
        jobs_before = len(fake.jobs)
        again = run(fake, root, out, concurrency=4)
    finally:
        server.shutdown()
    rows = lines(out)
    assert_exactly_once(rows, keys)
    assert rows[: len(first)] == first, "a rerun never rewrites what is there"
    assert again.skipped == len(first) and again.to_send == N_IMAGES - len(first)
    resent = {keys[image] for job in list(fake.jobs.values())[jobs_before:] for image in job["input"]["images"]}
    assert resent == set(keys.values()) - {row["path"] for row in first}, "the rerun sends only the missing"


def test_cli_batch_writes_jsonl_and_csv_and_retry_failed_resends_only_failures(dataset, tmp_path, monkeypatch, capsys):
    root, keys = dataset
    fake, server = start(Faults())
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", fake.url)
    out, table = tmp_path / "r.jsonl", tmp_path / "r.csv"
    args = ["batch", str(root), "--endpoint", ENDPOINT, "--out", str(out), "--no-progress", "--top-k", "1"]
    try:
        assert main([*args, "--csv", str(table), "--adapter", "inverted"]) == 1  # broken.png failed
        err = capsys.readouterr().err
        assert f"{N_IMAGES - 1} scored, 1 failed (IMAGE_DECODE_FAILED 1)" in err and "images/s" in err
        sent = len(fake.images_sent())
        assert main(args) == 1 and len(fake.images_sent()) == sent, "nothing left to send"
        assert main([*args, "--retry-failed"]) == 1
        assert len(fake.images_sent()) == sent + 1, "only the failed image is sent again"
    finally:
        server.shutdown()
    assert_exactly_once(lines(out), keys)
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == N_IMAGES and {r["adapter"] for r in rows if not r["code"]} == {"inverted"}
    assert json.loads(rows[0]["top_k"] or "null") is None or isinstance(json.loads(rows[0]["top_k"]), list)


def test_unreadable_and_non_image_files_are_coded_failures_and_the_rest_is_scored(tmp_path):
    import os

    root = tmp_path / "data"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / label / "ok.png")
    os.mkfifo(root / "a" / "pipe.png")  # reading it would block: refused unopened
    (root / "a" / "link.png").symlink_to(root / "gone.png")  # broken: what root cannot read either
    (root / "b" / "notes.png").write_text("not an image")  # read and sent: the worker's decode refuses it
    with fake_queue(Faults()) as fake:
        summary = run(fake, root, tmp_path / "results.jsonl")
    codes = {row["path"]: row["code"] for row in lines(tmp_path / "results.jsonl")}
    assert codes == {
        "a/ok.png": None,
        "b/ok.png": None,
        "a/pipe.png": "FILE_UNREADABLE",
        "a/link.png": "FILE_UNREADABLE",
        "b/notes.png": "IMAGE_DECODE_FAILED",
    }
    assert summary.failed_by_code == {"FILE_UNREADABLE": 2, "IMAGE_DECODE_FAILED": 1}


def test_bad_arguments_and_datasets_are_refused_before_sending(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    assert main(["batch", str(tmp_path / "nope"), "--local", "http://127.0.0.1:9", "--out", "x.jsonl"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["batch", str(tmp_path), "--local", "http://127.0.0.1:9", "--out", "x", "--remote-root", "/v"]) == 2
    assert "--remote-root needs --by-reference" in capsys.readouterr().err


def test_the_documented_batch_commands_parse(root):
    import shlex

    from fastbackend.cli import build_parser

    section = (root / "docs" / "tutorials" / "score-a-dataset.md").read_text()
    lines = [line.split("#")[0].rstrip(" &") for line in section.splitlines() if ".venv/bin/fastbackend " in line]
    assert sum(" batch " in line for line in lines) >= 4
    for line in lines:
        argv = shlex.split(line.replace("<endpoint id>", "abc123"))
        build_parser().parse_args(argv[argv.index(".venv/bin/fastbackend") + 1 :])


# -- the results file: any name, a corrupt middle refused, one writer, duplicates shown (issue 24.10)
def test_a_file_name_that_is_not_utf8_is_scored_once_and_read_back(tmp_path):
    import os

    root = tmp_path / "data"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / label / "ok.png")
    Image.fromarray(np.ones((8, 8), dtype=np.uint8)).save(os.fsdecode(bytes(root / "a") + b"/caf\xe9.png"))
    out = tmp_path / "results.jsonl"
    with fake_queue(Faults()) as fake:
        summary = run(fake, root, out, csv=tmp_path / "r.csv")
        assert summary.written_ok == 3 and exit_code(summary) == 0
        again = run(fake, root, out)
    assert again.to_send == 0 and again.skipped == 3, "the non-UTF-8 key reads back as the same key"
    assert os.fsdecode(b"a/caf\xe9.png") in {row["path"] for row in lines(out)}
    assert b"caf\xe9.png" in (tmp_path / "r.csv").read_bytes()


def test_only_a_torn_last_line_is_repaired_and_a_corrupt_middle_is_refused_naming_it(dataset, tmp_path, capsys):
    from fastbackend.batch.results import ResultsError, ResultsFile

    root, keys = dataset
    out = tmp_path / "results.jsonl"
    with fake_queue(Faults()) as fake:
        run(fake, root, out)
    good = out.read_bytes()
    out.write_bytes(good + b'{"path": "class0/0')  # a write cut short: repaired
    with ResultsFile(out) as results:
        assert results.repaired_bytes == 18 and len(results.done) == N_IMAGES
    assert out.read_bytes() == good
    middle = good.splitlines(keepends=True)
    for bad in (b"\n", b"not json\n", b'{"path": "class0/0'):
        out.write_bytes(b"".join(middle[:10] + [bad] + middle[10:]))
        before = out.read_bytes()
        with pytest.raises(ResultsError, match=f"{out}, line 11: not a result line"):
            ResultsFile(out)
        assert out.read_bytes() == before, "nothing is cut"
        assert main(["batch", str(root), "--local", "http://127.0.0.1:9", "--out", str(out), "--no-progress"]) == 2
        assert "line 11" in capsys.readouterr().err


def test_a_second_writer_on_the_same_results_file_is_refused(dataset, tmp_path):
    from fastbackend.batch.results import ResultsError, ResultsFile

    root, keys = dataset
    out = tmp_path / "results.jsonl"
    with ResultsFile(out):
        with fake_queue(Faults()) as fake, pytest.raises(ResultsError, match="another `fastbackend batch`"):
            run(fake, root, out)
        assert fake.images_sent() == []
    with fake_queue(Faults()) as fake:  # released on close: the next run writes each image once
        run(fake, root, out)
    assert_exactly_once(lines(out), keys)


def test_duplicate_lines_are_printed(dataset, tmp_path):
    root, keys = dataset
    out = tmp_path / "results.jsonl"
    with fake_queue(Faults()) as fake:
        run(fake, root, out)
        out.write_bytes(out.read_bytes() + out.read_bytes().splitlines(keepends=True)[3])
        summary = run(fake, root, out)
    shown = "\n".join(summary.lines())
    assert summary.duplicates == [lines(out)[3]["path"]] and repr(lines(out)[3]["path"]) in shown, shown


def test_a_wrong_remote_root_fails_after_two_images(dataset, tmp_path):
    root, keys = dataset
    with fake_queue(Faults(readable_root="/runpod-volume/data")) as fake:
        summary = run(fake, root, tmp_path / "wrong.jsonl", by_reference=True, remote_root="/runpod-volume/dtaa")
        assert len(fake.images_sent()) == 2 and summary.aborted and "--remote-root" in summary.aborted
        assert exit_code(summary) == 1
    with fake_queue(Faults(readable_root="/runpod-volume/data")) as fake:
        summary = run(fake, root, tmp_path / "right.jsonl", by_reference=True, remote_root="/runpod-volume/data")
        assert len(fake.images_sent()) == N_IMAGES and summary.written_ok == N_IMAGES


def test_a_train_runs_split_manifest_is_scored_with_allow_outside(dataset, tmp_path, monkeypatch, capsys):
    """03_train_adapter writes split.csv in its run folder, naming the dataset's files (issue 31.2)."""
    from worker.datasets import load_dataset, write_manifest

    root, keys = dataset
    data = load_dataset(root, check_files=False)
    split = write_manifest(tmp_path / "run" / "split.csv", [type(i)(i.path, i.label, "val") for i in data.items])
    fake, server = start(Faults())
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", fake.url)
    args = ["batch", str(split), "--endpoint", ENDPOINT, "--out", str(tmp_path / "r.jsonl"), "--no-progress"]
    try:
        assert main(args) == 2
        assert "outside the manifest's folder" in (err := capsys.readouterr().err) and "--allow-outside" in err
        assert main([*args, "--allow-outside", "--split", "val"]) == 1  # broken.png is a coded failure
    finally:
        server.shutdown()
    assert len(lines(tmp_path / "r.jsonl")) == N_IMAGES


def test_a_clients_mistake_on_one_image_fails_that_image_only_and_is_not_retried(dataset, tmp_path):
    """INVALID_INPUT naming images[i] (a path the worker cannot take as it is): the same answer on
    every worker, so never retried; the job's other images are sent again and scored."""
    root, keys = dataset
    faults = Faults(failed={1: "INVALID_INPUT: images[1]: the path is not valid text (a lone UTF-16 surrogate)"})
    with fake_queue(faults) as fake:
        summary = run(fake, root, tmp_path / "results.jsonl", concurrency=1)
    rows = lines(tmp_path / "results.jsonl")
    assert_exactly_once(rows, keys)
    invalid = [row for row in rows if row["code"] == "INVALID_INPUT"]
    assert [row["path"] for row in invalid] == [keys[fake.jobs["job-1"]["input"]["images"][1]]]
    assert invalid[0]["attempt"] == 1 and not summary.retries, summary.retries
    assert summary.failed_by_code == {"INVALID_INPUT": 1, "IMAGE_DECODE_FAILED": 1}


def test_embed_writes_every_vector_to_jsonl_and_npy_in_dataset_order(dataset, tmp_path, monkeypatch, capsys):
    """`--op embed --npy`: each image's vector as the worker answered it (base64 float32, decoded
    exactly) in the JSONL and as one row of the (N, D) array, in the dataset's order beside
    `.paths.txt`; the image that failed is left out of the array, and a rerun writes the same array."""
    from fixtures.fake_runpod import fake_vector

    from worker.datasets import load_dataset

    root, keys = dataset
    fake, server = start(Faults())
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", fake.url)
    out, npy = tmp_path / "v.jsonl", tmp_path / "v.npy"
    args = ["batch", str(root), "--endpoint", ENDPOINT, "--out", str(out), "--no-progress", "--op", "embed"]
    try:
        assert main([*args, "--npy", str(npy)]) == 1  # broken.png failed
        first = np.load(npy)
        assert main([*args, "--npy", str(npy)]) == 1 and np.array_equal(np.load(npy), first), "a rerun, same array"
        assert main(["batch", str(root), "--endpoint", ENDPOINT, "--out", str(out), "--npy", str(npy)]) == 2
    finally:
        server.shutdown()
    assert "--npy needs --op embed" in capsys.readouterr().err
    by_key = {key: image for image, key in keys.items()}
    order = [item.path.relative_to(root).as_posix() for item in load_dataset(root).items]
    paths = npy.with_suffix(".paths.txt").read_text().split()
    assert paths == [key for key in order if key != "class0/broken.png"]
    assert first.dtype == np.float32 and first.shape == (N_IMAGES - 1, 4)
    expected = np.array([fake_vector(by_key[key]) for key in paths], dtype=np.float32)
    assert np.array_equal(first, expected), "the vectors as answered, in the dataset's order"
    rows = {row["path"]: row for row in lines(out)}
    assert rows["class0/broken.png"]["code"] == "IMAGE_DECODE_FAILED" and rows["class0/broken.png"]["embedding"] is None
    assert np.array_equal(np.array(rows[paths[0]]["embedding"], dtype=np.float32), expected[0])
