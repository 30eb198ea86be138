"""The op list, the default op and the adapter-name rule: one definition each, obeyed everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.adapters import scan_adapters
from worker.config import ADAPTER_NAME_PATTERN, ConfigError, WorkerConfig
from worker.errors import ErrorCode, WorkerError
from worker.runtime import Worker
from worker.schema import DEFAULT_OP, MODELS, OPS, PredictInput, json_schema, parse_input, requested_op

from .stub_notebooks import stub_functions


def test_every_op_has_exactly_one_operation():
    assert OPS == ("predict", "embed", "preprocess", "adapters", "health", "metrics", "ping", "echo")
    assert set(Worker(stub_functions()).operations) == set(MODELS) == set(OPS)


def test_the_default_op_is_predict_in_parsing_dispatch_and_the_published_schema():
    assert DEFAULT_OP == "predict"
    request = parse_input({"images": "abc"})
    assert isinstance(request, PredictInput) and request.op == DEFAULT_OP
    assert requested_op({}) == DEFAULT_OP and requested_op("x") is None
    assert f"defaults to {DEFAULT_OP}" in json_schema()["description"]


def test_unknown_op_lists_the_known_ones():
    with pytest.raises(WorkerError) as caught:
        parse_input({"op": "train"})
    assert caught.value.code is ErrorCode.UNKNOWN_OP
    assert caught.value.message.endswith("known: " + ", ".join(OPS))


NAMES = {  # name -> valid under the one rule
    "inverted": True,
    "A.b-c_1": True,
    "x" * 64: True,
    "x" * 65: False,
    ".hidden": False,
    "-dash": False,
    "has space": False,
    "ünï": False,
}


@pytest.mark.parametrize("name,valid", NAMES.items(), ids=range(len(NAMES)))
def test_adapter_name_rule_is_the_same_for_config_job_input_and_folders(tmp_path: Path, name, valid):
    def accepted_by_config() -> bool:
        try:
            WorkerConfig(preload_adapters=(name,))
        except ConfigError:
            return False
        return True

    def accepted_in_a_job() -> bool:
        try:
            parse_input({"images": "abc", "adapter": name})
        except WorkerError as exc:
            assert exc.code is ErrorCode.INVALID_INPUT and exc.field == "adapter"
            return False
        return True

    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    served = name in scan_adapters(tmp_path, stub_functions())
    assert (accepted_by_config(), accepted_in_a_job(), served) == (valid, valid, valid)
    assert ADAPTER_NAME_PATTERN in str(json_schema()), "the published schema carries the same pattern"
