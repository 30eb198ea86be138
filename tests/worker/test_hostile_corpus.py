"""The hostile corpus (tests/fixtures/hostile.py) through RunPod's real local API: each case answers its
code, and the worker still answers a valid job afterwards. `make test` runs one case per kind;
`make test-full` (the `full` marker) runs them all. Times and memory: benchmarks/hostile.py."""

from __future__ import annotations

import pytest
from fixtures.hostile import CASES, plain_png_digit, run_case

from fastbackend.local import serve_api

PARAMS = [pytest.param(c, id=c.name, marks=() if c.representative else pytest.mark.full) for c in CASES]


@pytest.fixture(scope="module")
def api(root, models_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("corpus") / "worker.log"
    env = {"FASTBACKEND_BASE_MODEL": str(models_dir / "base"), "FASTBACKEND_ADAPTERS_DIR": str(models_dir / "adapters")}
    with serve_api(root, env=env, log_file=log) as server:
        yield server, log


@pytest.mark.parametrize("case", PARAMS)
def test_case_answers_its_code_and_the_worker_serves_on(api, case):
    server, log = api
    outcome = run_case(server.url, server.pid, log, case)
    assert outcome.code == case.code, outcome.answer if len(str(outcome.answer)) < 3000 else outcome.code
    if case.code != "success":
        assert len(str(outcome.answer)) < 4096, "an error answer quotes the input"
    valid = next(c for c in CASES if c.make is plain_png_digit)
    assert run_case(server.url, None, None, valid).code == "success"
