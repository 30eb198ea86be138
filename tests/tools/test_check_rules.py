"""`fastbackend check`: rules and resolution cases too small for their own fixture file.

Each case is a handler module written into a temporary project next to a copy of the fixture
runtime package; the table says which findings it must produce (and nothing else).
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from fastbackend.check import CheckOptions, review

RUNTIME = Path(__file__).parents[1] / "fixtures" / "handlers" / "fixture_runtime"

THIN = """
from fixture_runtime.worker import Worker
WORKER = Worker()

def handler(job):
    return WORKER.handle(job)

if __name__ == "__main__":
    WORKER.setup_or_exit()
    import runpod
    runpod.serverless.start({"handler": handler})
"""

# name -> (files relative to the project root; the handler is handler.py), expected rule ids
CASES: dict[str, tuple[dict[str, str], set[str]]] = {
    "thin handler baseline": ({"handler.py": THIN}, set()),
    "handler in a package, runtime through a relative import and a re-export": (
        {
            "svc/__init__.py": "",
            "svc/glue.py": "from fixture_runtime.worker import Worker as Engine\n",
            "svc/handler.py": THIN.replace(
                "from fixture_runtime.worker import Worker", "from .glue import Engine as Worker"
            ),
        },
        set(),
    ),
    "start() inside a project function, handler passed as an argument": (
        {
            "boot.py": (
                "import runpod\n\ndef serve(fn, **extra):\n    runpod.serverless.start({'handler': fn, **extra})\n"
            ),
            "handler.py": THIN.replace(
                '    import runpod\n    runpod.serverless.start({"handler": handler})',
                "    from boot import serve\n    serve(handler)",
            ),
        },
        set(),
    ),
    "handler built by a factory": (
        {
            "handler.py": """
from fixture_runtime.worker import Worker

def make_handler(worker):
    def answer(job):
        return worker.handle(job)
    return answer

WORKER = Worker()
handler = make_handler(WORKER)

if __name__ == "__main__":
    WORKER.setup_or_exit()
    import runpod
    runpod.serverless.start({"handler": handler})
"""
        },
        set(),
    ),
    "a decorator's wrapper catches what the body raises": (
        {
            "handler.py": """
import functools
from fixture_runtime.errors import classify, error_response
from fixture_runtime.limits import check_payload
from fixture_runtime.telemetry import after_job, log_event

def safe(fn):
    @functools.wraps(fn)
    def wrapper(job):
        try:
            return fn(job)
        except Exception as exc:
            return error_response(classify(exc), job.get("id"))
        finally:
            log_event("job.done", rss_mb=after_job())
    return wrapper

@safe
def handler(job):
    check_payload(job["input"])
    if "text" not in job["input"]:
        raise ValueError("text is required")
    return {"status": "success", "text": job["input"]["text"]}

if __name__ == "__main__":
    import runpod
    runpod.serverless.start({"handler": handler})
"""
        },
        set(),
    ),
    "start() picks an async handler that offloads to a thread, or the sync one": (
        {
            "handler.py": """
import asyncio
import time
from fixture_runtime.worker import Worker
WORKER = Worker()
CONCURRENT = False

def handler(job):
    return WORKER.handle(job)

def slow(job):
    time.sleep(0.01)  # fine in a worker thread
    return WORKER.handle(job)

async def async_handler(job):
    return await asyncio.to_thread(slow, job)

if __name__ == "__main__":
    WORKER.setup_or_exit()
    import runpod
    runpod.serverless.start({"handler": async_handler if CONCURRENT else handler,
                             "concurrency_modifier": lambda current: 4})
"""
        },
        set(),
    ),
    "payload limit above RunPod's": (
        {
            "handler.py": """
import json
from fixture_runtime.errors import ErrorCode, WorkerError, classify, error_response
from fixture_runtime.worker import Worker
MAX_PAYLOAD_BYTES = 50 * 1024 * 1024
WORKER = Worker()

def handler(job):
    try:
        if len(json.dumps(job["input"])) > MAX_PAYLOAD_BYTES:
            raise WorkerError(ErrorCode.PAYLOAD_TOO_LARGE, "too big")
        return WORKER.handle(job)
    except Exception as exc:
        return error_response(classify(exc), job.get("id"))

if __name__ == "__main__":
    WORKER.setup_or_exit()
    import runpod
    runpod.serverless.start({"handler": handler})
"""
        },
        {"payload-limit-too-high"},
    ),
    "model loaded at import": (
        {
            "hub.py": "class Model:\n    @classmethod\n    def from_pretrained(cls, name):\n        return cls()\n",
            "handler.py": "from hub import Model\nMODEL = Model.from_pretrained('x')\n" + THIN,
        },
        {"setup-at-import"},
    ),
    "setup function called from the handler body": (
        {
            "handler.py": THIN.replace(
                "def handler(job):\n    return WORKER.handle(job)",
                "def load_model():\n    WORKER.setup()\n\n"
                "def handler(job):\n    load_model()\n    return WORKER.handle(job)",
            ),
        },
        {"setup-in-handler"},
    ),
    "loader behind a cache: a note, not a finding": (
        {
            "hub.py": "class Model:\n    @classmethod\n    def from_pretrained(cls, name):\n        return cls()\n",
            "handler.py": "import functools\nfrom hub import Model\n\n@functools.lru_cache(maxsize=4)\n"
            "def adapter(name):\n    return Model.from_pretrained(name)\n"
            + THIN.replace("    return WORKER.handle(job)", "    adapter('base')\n    return WORKER.handle(job)"),
        },
        set(),
    ),
    "async handler without a concurrency modifier": (
        {"handler.py": THIN.replace("def handler(job):", "async def handler(job):")},
        {"async-without-concurrency"},
    ),
    "exception swallowed": (
        {
            "handler.py": THIN.replace(
                "    return WORKER.handle(job)",
                "    try:\n        job['input'].pop('trace', None)\n    except Exception:\n        pass\n"
                "    return WORKER.handle(job)",
            )
        },
        {"swallowed-exception"},
    ),
    "start() defined but never called": (
        {
            "handler.py": THIN.replace(
                'if __name__ == "__main__":\n    WORKER.setup_or_exit()\n    import runpod\n',
                "import runpod\n\ndef main():\n    WORKER.setup_or_exit()\n",
            )
        },
        {"no-start"},
    ),
    "runpod used without an import": ({"handler.py": THIN.replace("    import runpod\n", "")}, {"no-runpod-import"}),
    "external command at start": (
        {
            "handler.py": THIN.replace(
                "    WORKER.setup_or_exit()\n",
                "    import subprocess\n    subprocess.run(['nvidia-smi'], timeout=5, check=False)\n"
                "    WORKER.setup_or_exit()\n",
            )
        },
        {"subprocess"},
    ),
    "two required parameters": (
        {"handler.py": THIN.replace("def handler(job):", "def handler(job, context):")},
        {"handler-signature"},
    ),
    "start() config without a handler": (
        {"handler.py": THIN.replace('{"handler": handler}', '{"concurrency_modifier": lambda n: 1}')},
        {"no-handler"},
    ),
    "input never read": (
        {
            "handler.py": """
from fixture_runtime.errors import classify, error_response
from fixture_runtime.limits import check_payload
from fixture_runtime.telemetry import after_job, log_event

def handler(job):
    try:
        check_payload(job)
        return {"status": "success", "echo": job["prompt"]}
    except Exception as exc:
        return error_response(classify(exc), job.get("id"))
    finally:
        log_event("job.done", rss_mb=after_job())

if __name__ == "__main__":
    import runpod
    runpod.serverless.start({"handler": handler})
"""
        },
        {"no-input-read"},
    ),
    "argv read directly": (
        {
            "handler.py": THIN.replace(
                "    WORKER.setup_or_exit()\n", "    import sys\n    MODE = sys.argv[1]\n    WORKER.setup_or_exit()\n"
            )
        },
        {"argv-parsing"},
    ),
    "relative import of a missing module": (
        {"pkg/__init__.py": "", "pkg/handler.py": "from .nothere import x\n" + THIN},
        {"import-error"},
    ),
    "imported module does not parse": (
        {"broken.py": "def f(:\n    pass\n", "handler.py": "import broken\n" + THIN},
        {"syntax-error"},
    ),
}


def make_project(root: Path, files: dict[str, str], test_input: str | None = '{"input": {"text": "hi"}}') -> Path:
    shutil.copytree(RUNTIME, root / "fixture_runtime", ignore=shutil.ignore_patterns("__pycache__"))
    handler = None
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        if path.name == "handler.py":
            handler = path
    if test_input is not None:
        (root / "test_input.json").write_text(test_input)
    assert handler is not None
    return handler


@pytest.mark.parametrize("name", sorted(CASES))
def test_case(name: str, tmp_path: Path) -> None:
    files, expected = CASES[name]
    report = review(CheckOptions(make_project(tmp_path, files)))
    assert {f.rule_id for f in report.findings} == expected, [f.to_json() for f in report.findings]


def test_suppression_on_the_reported_line(tmp_path: Path) -> None:
    source = THIN.replace(
        'runpod.serverless.start({"handler": handler})',
        'runpod.serverless.start({"handler": handler})  # fastbackend: ignore[code-after-start]',
    )
    source += "    print('never')\n"
    handler = make_project(tmp_path, {"handler.py": source})
    assert {f.rule_id for f in review(CheckOptions(handler)).findings} == {"code-after-start"}
    lines = handler.read_text().splitlines()
    lines[-1] += "  # fastbackend: ignore[code-after-start]"
    handler.write_text("\n".join(lines) + "\n")
    report = review(CheckOptions(handler))
    assert report.findings == () and [f.rule_id for f in report.suppressed] == ["code-after-start"]
    assert report.score == 10.0


def test_missing_and_invalid_test_input(tmp_path: Path) -> None:
    handler = make_project(tmp_path / "a", {"handler.py": THIN}, test_input=None)
    assert {f.rule_id for f in review(CheckOptions(handler)).findings} == {"no-test-input"}
    handler = make_project(tmp_path / "b", {"handler.py": THIN}, test_input='{"input": {"text": "hi"}')
    (finding,) = review(CheckOptions(handler)).findings
    assert finding.rule_id == "bad-test-input" and finding.file.endswith("test_input.json")


def test_resolution_stays_out_of_site_packages(tmp_path: Path) -> None:
    report = review(CheckOptions(make_project(tmp_path, {"handler.py": THIN})))
    assert not any("site-packages" in m for m in report.modules)
    assert all(Path(m).resolve().is_relative_to(tmp_path.resolve()) for m in report.modules)
