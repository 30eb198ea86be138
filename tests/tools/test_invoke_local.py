"""`fastbackend invoke` without a target, on an ordinary photo (issue 31.1): the job travels on the
local API, not as one command-line argument (Linux caps one at 128 KiB)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import sklearn

from fastbackend.cli import main

CHINA = Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"


def test_a_photo_over_the_argument_limit_is_predicted(models_dir, root, tmp_path, monkeypatch, capsys):
    photo = tmp_path / "photo.jpg"
    shutil.copy(CHINA, photo)
    assert photo.stat().st_size * 4 / 3 > 128 * 1024, "the base64 alone is over one argument's limit"
    monkeypatch.setenv("FASTBACKEND_BASE_MODEL", str(models_dir / "base"))
    monkeypatch.setenv("FASTBACKEND_ADAPTERS_DIR", str(models_dir / "adapters"))
    monkeypatch.chdir(root)
    code = main(["invoke", str(photo), "--json", "--top-k", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    predictions = json.loads(out)["predictions"]
    assert len(predictions) == 1 and len(predictions[0]["top_k"]) == 2
    assert "Argument list too long" not in err
