"""The install files agree with each other, and optional GPU packages stay optional."""
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins(lines):
    return {m.group(1).lower(): m.group(2) for m in (re.match(r"^\s*([A-Za-z0-9_.\-]+)==(\S+)", l) for l in lines) if m}


def test_environment_yml_pins_equal_requirements_txt():
    req = pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert pins(pip_list) == req
    assert req, "requirements.txt pins nothing"


def test_every_requirement_is_pinned_exactly():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert "==" in line, f"unpinned requirement: {line}"


def test_mamba_ssm_is_only_an_optional_extra():
    text = (ROOT / "pyproject.toml").read_text()
    deps = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "mamba" not in deps
    assert "mamba-ssm" in text.split("[project.optional-dependencies]", 1)[1]


def test_the_demo_data_and_its_licence_ship_with_the_package():
    """`make demo` runs offline from the Fashion-MNIST subset inside the package: the wheel must carry it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mobilemamba.data"]
    package = ROOT / "src" / "mobilemamba" / "data"
    assert {p.name for pattern in patterns for p in package.glob(pattern)} == {
        "fashion_mnist_demo.npz.xz", "fashion_mnist_demo.LICENSE"}
