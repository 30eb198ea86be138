"""Dependencies are declared once (pyproject); environment.yml must mirror them exactly."""

import tomllib

import yaml


def test_environment_yml_mirrors_pyproject(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    mirrored = {p for p in pip_section if not p.startswith("-e")}
    assert mirrored == declared, (
        f"only in pyproject: {declared - mirrored}; only in environment.yml: {mirrored - declared}"
    )
    assert "-e ." in pip_section
    assert "python=3.11" in env["dependencies"]


def test_torch_is_pinned_to_the_cpu_wheel_on_disk(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
