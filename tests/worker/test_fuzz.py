"""Fuzzing the real handler with hypothesis: valid, near-valid and hostile job inputs.

Every answer must be a JSON-serialisable dict; a failure must carry a known code; nothing
may raise; and the worker must still answer a valid job correctly afterwards. The example
counts add up to about 5,000 per run; make test-full multiplies them by 5 (FASTBACKEND_FUZZ_SCALE).
"""

from __future__ import annotations

import base64
import json
import os

import pytest
from conftest import digit, png_header_only
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.errors import ErrorCode
from worker.schema import OPS

SCALE = float(os.environ.get("FASTBACKEND_FUZZ_SCALE", "1"))
CODES = {c.value for c in ErrorCode}
_VALID = [digit("digits", i)[0] for i in range(4)] + [digit("inverted", i)[0] for i in range(4)]


def fuzz_settings(examples: int):
    return settings(
        max_examples=int(examples * SCALE), deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_value = st.recursive(
    json_leaf, lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=10), c, max_size=5), max_leaves=30
)

b64 = st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode())
absurd_png = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)).map(
    lambda wh: base64.b64encode(png_header_only(*wh)).decode()
)
image = (
    st.sampled_from(_VALID)
    | b64
    | absurd_png
    | st.text(max_size=50)
    | st.sampled_from(_VALID).map(lambda s: "data:image/png;base64," + s)
    | st.sampled_from(_VALID).map(lambda s: s[: len(s) // 2])
)
images = image | st.lists(image, max_size=8) | json_value
adapter = (
    st.none()
    | st.sampled_from(["inverted", "rot90", "../inverted", "inverted/../rot90", "", "sepia"])
    | st.text(max_size=20)
)
top_k = st.integers(-5, 200) | st.floats(allow_nan=True) | st.booleans() | st.text(max_size=3) | st.just(10**40)
op = st.sampled_from(OPS) | st.text(max_size=12) | json_leaf


@st.composite
def near_valid(draw):
    body = {"images": draw(images)}
    for key, strategy in (
        ("op", op),
        ("adapter", adapter),
        ("top_k", top_k),
        ("return_logits", json_leaf),
        ("payload", json_value),
        ("return_pixels", st.booleans()),
    ):
        if draw(st.booleans()):
            body[key] = draw(strategy)
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.text(max_size=8))] = draw(json_value)
    return body


def deep(depth: int):
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture(scope="module")
def fuzzed(make_worker):
    return make_worker(max_batch=8)


def check(worker, job_input) -> None:
    answer = worker.handle({"id": "fuzz", "input": job_input})
    assert isinstance(answer, dict)
    json.dumps(answer, allow_nan=False)
    if answer["status"] == "error":
        assert answer["code"] in CODES and isinstance(answer["error"], str)
        assert answer["error"].startswith(answer["code"] + ": ")
    else:
        assert answer["status"] == "success"


@fuzz_settings(2000)
@given(job_input=json_value)
def test_arbitrary_json_inputs(fuzzed, job_input):
    check(fuzzed, job_input)


@fuzz_settings(2500)
@given(job_input=near_valid())
def test_near_valid_inputs(fuzzed, job_input):
    check(fuzzed, job_input)


@fuzz_settings(400)
@given(depth=st.integers(0, 200), op_name=st.sampled_from(["echo", "predict"]))
def test_deep_nesting(fuzzed, depth, op_name):
    check(fuzzed, {"op": op_name, "payload" if op_name == "echo" else "images": deep(depth)})


def test_the_worker_still_answers_a_valid_job_correctly_after_fuzzing(fuzzed):
    image, label = digit("digits", 9)
    answer = fuzzed.handle({"id": "after", "input": {"images": image}})
    assert answer["predictions"][0]["label"] == str(label)
    metrics = fuzzed.handle({"id": "m", "input": {"op": "metrics"}})
    assert metrics["jobs_total"] >= int(4_000 * SCALE)  # the three fuzz tests above: 2,000 + 2,500 + 400
    assert set(metrics["errors"]) <= CODES and "INTERNAL" not in metrics["errors"]
