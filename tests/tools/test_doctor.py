"""`fastbackend doctor`: the worker's own setup steps, each reported, exit 0 only when all will serve.
In-process through the CLI's `main`: the demo models, and broken copies of them in tmp_path."""

from __future__ import annotations

import json
import shutil

from fixtures.architectures import build

from fastbackend.cli import main


def doctor(capsys, *args):
    code = main(["doctor", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_demo_models_are_served_faithfully(models_dir, capsys):
    code, out, err = doctor(capsys, str(models_dir / "base"), str(models_dir / "adapters"))
    assert code == 0, out + err
    assert "ViTForImageClassification (model_type vit)" in out and "ViTImageProcessor: L 16x16" in out
    assert "labels        10: 0, 1, 2, 3, 4, ..." in out
    assert "image-classification (from config.json's architectures)" in out  # the task, and why
    adapters = sorted(p.name for p in (models_dir / "adapters").iterdir())
    for name in adapters:
        assert f"\n{name} " in out and "the base fingerprint in fastbackend.json matches" in out
    assert "NO" not in out and out.rstrip().endswith("served faithfully by this worker: yes")


def broken_copy(models_dir, tmp_path):
    """The demo base with a processor field the worker refuses and one no processor reads, and its
    adapters beside one made for another base and one whose folder breaks the name rule."""
    base = shutil.copytree(models_dir / "base", tmp_path / "base")
    processor = base / "preprocessor_config.json"
    fields = json.loads(processor.read_text())
    processor.write_text(json.dumps({**fields, "size": {"longest_edge": 32}, "sizee": 16}))
    adapters = shutil.copytree(models_dir / "adapters", tmp_path / "adapters")
    shutil.copytree(adapters / "inverted", adapters / "other")
    (adapters / "other" / "fastbackend.json").write_text(json.dumps({"base_fingerprint": "feedfacefeedface"}))
    shutil.copytree(adapters / "inverted", adapters / "no good")
    return base, adapters


def test_a_broken_model_is_reported_field_by_field(models_dir, tmp_path, capsys):
    base, adapters = broken_copy(models_dir, tmp_path)
    code, out, _ = doctor(capsys, str(base), str(adapters), "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    fields = {row["field"]: row for row in report["fields"]}
    assert not fields["size"]["honoured"] and "longest_edge" in fields["size"]["note"]
    assert fields["sizee"]["honoured"] and fields["sizee"]["note"].startswith("no effect")
    assert fields["image_mean"]["honoured"] and fields["resample"]["source"] == "default"
    checks = {row["what"]: row for row in report["checks"]}
    assert (
        not checks["processor"]["ok"]
        and f"{base / 'preprocessor_config.json'}: size=" in checks["processor"]["verdict"]
    )
    assert checks["model class"]["value"] == "ViTForImageClassification"  # the rest is still examined
    verdicts = {row["name"]: (row["served"], row["reason"]) for row in report["adapters"]}
    assert verdicts["inverted"][0] is True
    assert verdicts["other"][0] is False and "another base model" in verdicts["other"][1]
    assert verdicts["no good"][0] is False and "adapter-name rule" in verdicts["no good"][1]


def test_another_architecture_and_an_absent_device(tmp_path, capsys, monkeypatch):
    # A tiny ConvNeXt built here: crop_pct is read, sizee is not; no adapters; a GPU this machine lacks.
    base = build("convnext", tmp_path / "convnext")
    processor = base / "preprocessor_config.json"
    processor.write_text(json.dumps({**json.loads(processor.read_text()), "sizee": 16}))
    monkeypatch.setenv("FASTBACKEND_DEVICE", "cuda:64")
    code, out, _ = doctor(capsys, str(base), "none", "--json")
    report = json.loads(out)
    checks = {row["what"]: row for row in report["checks"]}
    assert code == 1 and not checks["device"]["ok"] and "FASTBACKEND_DEVICE='cuda:64'" in checks["device"]["verdict"]
    assert checks["processor"]["ok"] and checks["processor"]["value"].startswith("ConvNextImageProcessor: RGB")
    assert checks["forward"]["ok"] and report["adapters"] == []
    fields = {row["field"]: row for row in report["fields"]}
    assert fields["crop_pct"]["note"] == "" and fields["sizee"]["note"].startswith("no effect")


def test_nothing_to_examine_is_one_line(tmp_path, capsys):
    for args, words in (
        ([str(tmp_path / "gone")], f"{tmp_path / 'gone'}: no such folder"),
        (
            ["fastbackend-test/not-cached", "none"],
            "fastbackend-test/not-cached: no such folder, and not in the hub cache",
        ),
        ([str(tmp_path), str(tmp_path / "no-adapters")], "no such adapters folder"),
    ):
        code, out, err = doctor(capsys, *args)
        assert code == 1 and out == "" and err.count("\n") == 1 and words in err, err


def test_an_unknown_processor_type_leaves_its_fields_unchecked(models_dir, tmp_path, capsys):
    base = shutil.copytree(models_dir / "base", tmp_path / "base")
    processor = base / "preprocessor_config.json"
    processor.write_text(json.dumps({**json.loads(processor.read_text()), "image_processor_type": "SuperProcessor"}))
    code, out, _ = doctor(capsys, str(base), "none", "--json")
    fields = {row["field"]: row["honoured"] for row in json.loads(out)["fields"]}
    assert code == 1 and fields.pop("image_processor_type") is False
    assert set(fields.values()) == {None}
