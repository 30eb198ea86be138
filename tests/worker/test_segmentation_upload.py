"""`"output": "upload"`: each mask PNG put in the operator's bucket by runpod's rp_upload, answered by URL.

The bucket is a real S3-compatible server on loopback (moto's server mode, tests/fixtures/s3.py),
reached over HTTP through rp_upload and boto3 as a cloud bucket would be. A tiny random SegFormer
(tests/fixtures/segmenters.py) segments the photos; every object, read back by its presigned URL,
equals the mask of the same photos answered inline (exactly for the same job's photos; on >= 99.9%
of pixels, as the pipeline parity, where each 12 MP photo's inline reference is a job of its own).
A bucket error is UPLOAD_FAILED; without the BUCKET_* variables an upload is refused before the
work (OUTPUT_TOO_LARGE with the advice when the answer could not go inline, INVALID_INPUT otherwise).

In `make test`: small photos in process. Under `make test-full`: 16 photos of 12 MP through RunPod's
local API, read from a path under FASTBACKEND_INPUT_ROOT (16 of them are over RunPod's 20 MB body).
"""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from fixtures.photos import jpeg_b64, variants
from fixtures.s3 import object_of, s3_server
from fixtures.segmenters import build
from PIL import Image

BUCKET = "masks"


def _png(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)))


def _inline(entry: dict) -> np.ndarray:
    return _png(base64.b64decode(entry["mask"]))


@pytest.fixture(scope="module")
def segformer(tmp_path_factory):
    return build("segformer", tmp_path_factory.mktemp("segformer"))


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    with s3_server(BUCKET, tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server


def _worker(base, monkeypatch, env: dict[str, str], **overrides):
    from exported.handler import WORKER as GENERATED
    from worker.config import BUCKET_ENV_VARS, WorkerConfig
    from worker.runtime import Worker

    for name in BUCKET_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    values = {"base_model": str(base), "adapters_dir": str(base / "none"), "warmup": False, "log_level": "ERROR"}
    return Worker(GENERATED.functions).setup(WorkerConfig(**{**values, **overrides}))


def _run(worker, job: dict) -> dict:
    return worker.handle({"id": "job-1", "input": job})


def test_masks_uploaded_equal_the_inline_masks(segformer, bucket, monkeypatch):
    env, client = bucket
    worker = _worker(segformer, monkeypatch, env, upload_bucket=BUCKET)
    photos = [jpeg_b64(variants(False)[name]) for name in ("china", "flower-portrait")]
    inline = _run(worker, {"images": photos})
    uploaded = _run(worker, {"images": photos, "output": "upload"})
    compact = _run(worker, {"images": photos, "output": "upload", "format": "compact"})
    assert uploaded["status"] == "success", uploaded
    assert worker.handle({"input": {"op": "health"}})["task"]["upload"] == {"bucket": BUCKET}
    for mine, theirs, small in zip(uploaded["predictions"], inline["predictions"], compact["predictions"]):
        assert [m["label"] for m in mine] == [t["label"] for t in theirs]
        for entry, expected in zip(mine, theirs):
            assert set(entry) == {"label", "score", "mask_url"} and entry["mask_url"].startswith(
                env["BUCKET_ENDPOINT_URL"]
            )
            assert np.array_equal(_png(object_of(client, entry["mask_url"])), _inline(expected))
        ids = _png(object_of(client, small["class_map_url"]))
        assert list(small["areas"]) == [t["label"] for t in theirs] and sum(small["areas"].values()) == ids.size
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert len(keys) == sum(len(p) for p in uploaded["predictions"]) + len(photos), keys


def test_a_bucket_error_is_upload_failed(segformer, bucket, monkeypatch):
    env, _ = bucket
    worker = _worker(segformer, monkeypatch, env, upload_bucket="no-such-bucket")
    answer = _run(worker, {"images": [jpeg_b64(variants(False)["china-small"])], "output": "upload"})
    assert answer["code"] == "UPLOAD_FAILED" and "no-such-bucket" in answer["message"], answer
    assert "NoSuchBucket" in answer["message"]
    assert _run(worker, {"op": "health"})["status"] == "success"  # the worker stays healthy


def test_without_a_bucket_upload_is_refused_before_the_work(segformer, monkeypatch):
    from fixtures.images import png_header_only

    worker = _worker(segformer, monkeypatch, {}, max_job_pixels=16 * 12_000_000, max_worker_pixels=32 * 12_000_000)
    small = _run(worker, {"images": [jpeg_b64(variants(False)["china-small"])], "output": "upload"})
    assert small["code"] == "INVALID_INPUT" and small["field"] == "output" and "BUCKET_ENDPOINT_URL" in small["message"]
    # 16 headers of 12 MP photos (no pixels behind them): refused from the headers alone, in well under a second.
    header = base64.b64encode(png_header_only(4000, 3000)).decode()
    started = time.perf_counter()
    large = _run(worker, {"images": [header] * 16, "output": "upload"})
    assert time.perf_counter() - started < 1.0
    assert large["code"] == "OUTPUT_TOO_LARGE" and '"output": "upload"' in large["message"], large
    assert '"format": "compact"' in large["message"] and "BUCKET_ENDPOINT_URL" in large["message"]


@pytest.mark.full
def test_16_masks_of_12_mp_photos_answered_as_urls_through_local_api(segformer, bucket, root, tmp_path):
    from fastbackend.local import serve_api

    env, client = bucket
    photos = {name: variants(True)[name] for name in ("china-12mp", "flower-12mp-portrait")}
    for name, image in photos.items():
        image.save(tmp_path / f"{name}.jpg", quality=90)
    names = [list(photos)[n % 2] for n in range(16)]
    job = {"images": [{"path": f"{name}.jpg"} for name in names], "output": "upload"}
    settings = {
        "FASTBACKEND_BASE_MODEL": str(segformer),
        "FASTBACKEND_ADAPTERS_DIR": str(tmp_path / "none"),
        "FASTBACKEND_INPUT_ROOT": str(tmp_path),
        "FASTBACKEND_MAX_JOB_PIXELS": str(16 * 12_000_000),
        "FASTBACKEND_MAX_WORKER_PIXELS": str(32 * 12_000_000),
        "FASTBACKEND_MAX_JOB_SOURCE_BYTES": str(1 << 30),
        "FASTBACKEND_MAX_WORKER_SOURCE_BYTES": str(1 << 30),
    }
    with serve_api(
        root, env={**settings, **env, "FASTBACKEND_UPLOAD_BUCKET": BUCKET}, log_file=tmp_path / "a.log"
    ) as api:
        api.timeout = 600  # 16 photos of 12 MP on a shared 2-core machine
        answer = api.runsync({"input": job})
        inline = {n: api.runsync({"input": {"images": [{"path": f"{n}.jpg"}]}}) for n in photos}
    assert answer["status"] == "COMPLETED", answer
    predictions = answer["output"]["predictions"]
    assert len(predictions) == 16
    agreement = []
    for name, masks in zip(names, predictions):
        expected = inline[name]["output"]["predictions"][0]
        assert [m["label"] for m in masks] == [e["label"] for e in expected]
        for entry, theirs in zip(masks, expected):
            mask = _png(object_of(client, entry["mask_url"]))
            assert mask.shape == ((3000, 4000) if name == "china-12mp" else (4000, 3000))
            agreement.append(float((mask == _inline(theirs)).mean()))
    # The inline reference is each photo alone (16 of them could not go inline): a forward of 16 adds its
    # sums in another order than one of 1, and the random model's near-ties flip a few pixels' argmax.
    print(f"{len(agreement)} uploaded masks; agreement with the inline masks: min {min(agreement):.6f}")
    assert min(agreement) >= 0.999
    with serve_api(root, env=settings, log_file=tmp_path / "b.log") as api:
        started = time.perf_counter()
        refused = api.runsync({"input": job})
        seconds = time.perf_counter() - started
    assert refused["status"] == "FAILED" and refused["error"].startswith("OUTPUT_TOO_LARGE"), refused
    assert '"output": "upload"' in refused["error"] and seconds < 1.0, seconds
