"""`fastbackend invoke` speaks every task: a flag per task request field, sent only when given, and
a table for each kind of answer."""

from __future__ import annotations

import base64
import struct

from fastbackend.cli import build_parser
from fastbackend.display import answer_table
from fastbackend.task_flags import given_fields, task_fields
from worker.schema import EmbedInput
from worker.tasks import TASKS


def parse(*argv: str):
    return build_parser().parse_args(["invoke", "a.png", *argv])


def test_every_task_request_field_is_a_flag():
    fields = set(task_fields())
    wanted = {f for task in TASKS.values() for f in task.request.model_fields} | set(EmbedInput.model_fields)
    assert fields == wanted - {"images", "adapter", "op"}
    help_text = build_parser()._subparsers._group_actions[0].choices["invoke"].format_help()
    assert all("--" + f.replace("_", "-") in help_text for f in fields)


def test_only_the_flags_given_are_sent_typed_as_the_request_wants():
    assert given_fields(parse()) == {}
    args = parse("--op", "embed", "--normalize", "--encoding-format", "base64")
    assert args.op == "embed" and given_fields(args) == {"normalize": True, "encoding_format": "base64"}
    args = parse("--candidate-labels", "cat", "a dog", "--threshold", "0.7", "--top-k", "2", "--no-return-logits")
    assert given_fields(args) == {
        "candidate_labels": ["cat", "a dog"],
        "threshold": 0.7,
        "top_k": 2,
        "return_logits": False,
    }
    assert given_fields(parse("--max-detections", "5")) == {"max_detections": 5}


def test_each_kind_of_answer_is_a_table():
    ranked = {"predictions": [[{"label": "cat", "score": 0.9}, {"label": "dog", "score": 0.1}]]}
    assert answer_table(["a.png"], ranked).splitlines()[2].split()[:3] == ["a.png", "cat", "0.900"]
    regions = {"predictions": [[{"label": "sky", "score": None, "mask": "..."}]]}
    assert answer_table(["a.png"], regions).splitlines()[2].split()[:3] == ["a.png", "sky", "-"]
    vector = base64.b64encode(struct.pack("<3f", 3.0, 0.0, 4.0)).decode()
    embedded = {"embeddings": [vector], "encoding_format": "base64", "adapter": None}
    assert answer_table(["a.png"], embedded).splitlines()[2].split() == ["a.png", "3", "base64", "5.0000"]
    assert answer_table(["a.png"], {"embeddings": [[0.6, 0.8]]}).splitlines()[2].split()[1:] == ["2", "float", "1.0000"]
