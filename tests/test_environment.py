"""pyproject.toml, environment.yml, constraints.txt and the CI entry agree."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.env


def _pins(lines):
    pins = {}
    for line in lines:
        req = Requirement(line)
        pins[canonicalize_name(req.name)] = str(req.specifier)
    return pins


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_environment_yml_matches_pyproject():
    project = _pyproject()
    wanted = _pins(project["dependencies"] + sum(project["optional-dependencies"].values(), []))
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _pins(pip_section) == wanted
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python == "python=3.11" and project["requires-python"] == ">=3.11,<3.12"


def test_every_dependency_is_pinned_exactly():
    project = _pyproject()
    for line in project["dependencies"] + sum(project["optional-dependencies"].values(), []):
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.+]*", line), f"not an exact pin: {line}"


def test_constraints_agree_with_pyproject():
    project = _pyproject()
    wanted = _pins(project["dependencies"] + sum(project["optional-dependencies"].values(), []))
    lines = [ln for ln in (ROOT / "constraints.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    locked = _pins(lines)
    for name, spec in wanted.items():
        assert locked.get(name) == spec, f"constraints.txt pins {name} {locked.get(name)}, pyproject {spec}"


def test_ci_runs_exactly_make_test():
    commands = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    assert commands[-1] == "make test"
    assert not any("pytest" in c for c in commands)


def test_installed_versions_are_the_pinned_ones():
    from importlib.metadata import version

    for name, spec in _pins(_pyproject()["dependencies"]).items():
        assert f"=={version(name)}" == spec, f"{name}: installed {version(name)}, pinned {spec}"
