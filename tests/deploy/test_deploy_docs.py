"""The deploy and pod tutorials' commands are the ones that work: the endpoint-creation snippet runs
against the runpod SDK (its GraphQL call faked), every `fastbackend` line parses, every `make`
target exists, and the pod script answers --help."""

from __future__ import annotations

import json
import re
import shlex
import subprocess

import pytest

from fastbackend.cli import build_parser


@pytest.fixture(scope="module")
def deploy_docs(root):
    tutorials = root / "docs" / "tutorials"
    return (tutorials / "deploy.md").read_text() + "\n" + (tutorials / "develop-on-a-pod.md").read_text()


def test_the_endpoint_snippet_creates_a_serverless_template_and_an_endpoint(root, deploy_docs, monkeypatch):
    import runpod.api.ctl_commands as ctl

    snippet = re.search(r"<<'PY'\n(.*?)\nPY\n", deploy_docs, re.S).group(1)
    sent: list[str] = []

    def fake_graphql(query):
        sent.append(" ".join(query.split()))
        return {"data": {"saveTemplate": {"id": "tpl-1"}, "saveEndpoint": {"id": "ep-1"}}}

    monkeypatch.setattr(ctl, "run_graphql_query", fake_graphql)
    monkeypatch.setenv("RUNPOD_API_KEY", "rp-test")
    exec(compile(snippet, "docs/tutorials/deploy.md", "exec"), {"__name__": "readme"})
    template, endpoint = sent
    assert "isServerless: true" in template and 'imageName: "docker.io/<you>/fastbackend-worker:0.1.0"' in template
    hub = json.loads((root / ".runpod" / "hub.json").read_text())["config"]
    assert f'allowedCudaVersions: "{",".join(hub["allowedCudaVersions"])}"' in endpoint
    assert f'gpuIds: "{hub["gpuIds"]}"' in endpoint and 'templateId: "tpl-1"' in endpoint


def test_every_fastbackend_command_in_the_docs_parses(deploy_docs):
    lines = [line.split("#")[0] for line in deploy_docs.splitlines() if ".venv/bin/fastbackend " in line]
    assert len(lines) >= 2
    for line in lines:
        argv = shlex.split(line.replace("<endpoint id>", "abc123"))
        build_parser().parse_args(argv[argv.index(".venv/bin/fastbackend") + 1 :])


def test_every_make_target_in_the_docs_exists(root, deploy_docs):
    targets = set(re.findall(r"(?:^|\s)make (\w+)", deploy_docs))
    assert {"image", "lab"} <= targets
    for target in targets:
        assert subprocess.run(["make", "-n", target], cwd=root, capture_output=True).returncode == 0, target


def test_the_pod_script_documents_its_options(root, deploy_docs):
    done = subprocess.run(["bash", "scripts/pod-setup.sh", "--help"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0
    for option in re.findall(r"`(--[a-z-]+)", _section_of(deploy_docs, "Develop on a pod")):
        assert option in done.stdout, option


def _section_of(text: str, title: str) -> str:
    return text[text.index(f"# {title}") :]
