"""`fastbackend adapters stamp`: the worker's own checks, one run, then fastbackend.json written.
In-process through the CLI's `main` (no process start): the demo base and a copy of its adapter."""

from __future__ import annotations

import json
import shutil

from exported.inference import ADAPTER_META_FILE, model_fingerprint
from fastbackend.cli import main


def _plain_peft_copy(models_dir, tmp_path):
    """The demo adapter as peft alone saves it: no fastbackend.json."""
    adapter = tmp_path / "rot90"
    shutil.copytree(models_dir / "adapters" / "rot90", adapter)
    (adapter / ADAPTER_META_FILE).unlink()
    return adapter


def test_stamp_writes_the_base_fingerprint(models_dir, tmp_path, capsys):
    adapter = _plain_peft_copy(models_dir, tmp_path)
    assert main(["adapters", "stamp", str(adapter), "--base-model", str(models_dir / "base"), "--task", "t"]) == 0
    meta = json.loads((adapter / ADAPTER_META_FILE).read_text())
    assert meta["base_fingerprint"] == model_fingerprint(models_dir / "base")
    assert meta["task"] == "t"
    assert meta["base_fingerprint"] in capsys.readouterr().out


def test_stamp_refuses_an_adapter_recorded_for_another_base(models_dir, tmp_path, capsys):
    adapter = _plain_peft_copy(models_dir, tmp_path)
    (adapter / ADAPTER_META_FILE).write_text(json.dumps({"base_fingerprint": "0123456789abcdef"}))
    assert main(["adapters", "stamp", str(adapter), "--base-model", str(models_dir / "base")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("stamp error: ") and "another base model" in err and err.count("\n") == 1
    assert json.loads((adapter / ADAPTER_META_FILE).read_text()) == {"base_fingerprint": "0123456789abcdef"}


def test_stamp_refuses_a_folder_without_an_adapter(models_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["adapters", "stamp", str(tmp_path / "empty"), "--base-model", str(models_dir / "base")]) == 1
    assert "no adapter_config.json" in capsys.readouterr().err


def test_stamp_publishes_into_a_live_adapters_folder_by_renames(models_dir, tmp_path, capsys):
    adapter = _plain_peft_copy(models_dir, tmp_path)
    live = tmp_path / "live"
    base = ["--base-model", str(models_dir / "base")]
    for task in ("first", "second"):  # published, then republished over the served one
        assert main(["adapters", "stamp", str(adapter), *base, "--task", task, "--publish-to", str(live)]) == 0
        assert json.loads((live / "rot90" / ADAPTER_META_FILE).read_text())["task"] == task
    assert sorted(p.name for p in live.iterdir()) == ["rot90"], "no staging folder is left behind"
    assert not (adapter / ADAPTER_META_FILE).exists(), "the source folder is left as it was"
    assert "published to" in capsys.readouterr().out
