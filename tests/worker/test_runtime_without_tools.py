"""The runtime alone: the generated handler answers with the tools' dependencies absent.

The serverless image installs only the runtime's dependencies. Here a sitecustomize on
PYTHONPATH hides the tools (`fastbackend`) and their dependencies from every import finder, as
if they were not installed, and the handler still answers RunPod's `--test_input`.
"""

from __future__ import annotations

import json
import subprocess
import sys

from fastbackend.local import handler_env, run_test_input

# yaml and tqdm are dependencies of transformers itself: they belong to the runtime.
TOOLS_ONLY = ("fastbackend", "papermill", "nbformat", "nbval", "jupyterlab", "sklearn")

BLOCKER = f"""
import sys

BLOCKED = {TOOLS_ONLY!r}


class Absent:
    \"\"\"Wraps a meta-path finder so that it finds none of the tools' packages: to `import` and to
    `importlib.util.find_spec` (transformers' availability checks) they look not installed.\"\"\"

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED or not hasattr(self.finder, "find_spec"):
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)


sys.meta_path[:] = [Absent(finder) for finder in sys.meta_path]
"""


def test_handler_answers_test_input_without_the_tools(tmp_path, root, models_dir):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {"PYTHONPATH": f"{tmp_path}:{root}", "FASTBACKEND_BASE_MODEL": str(models_dir / "base")}
    env["FASTBACKEND_ADAPTERS_DIR"] = str(models_dir / "adapters")

    probe = (
        f"import importlib, importlib.util\nfor name in {TOOLS_ONLY!r}:\n"
        "    try:\n        importlib.import_module(name)\n    except ImportError:\n"
        "        print(name) if importlib.util.find_spec(name) is None else None\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=handler_env(env), capture_output=True, text=True)
    assert done.stdout.split() == list(TOOLS_ONLY), f"the blocker is not in effect: {done.stdout}{done.stderr}"

    job = json.loads((root / "test_input.json").read_text())
    run = run_test_input(job, root, env=env)
    assert run.returncode == 0 and run.error is None, run.log[-3000:]
    assert run.output["status"] == "success" and run.output["predictions"], run.output
