"""The pip pins (requirements.txt) and the conda environment (environment.yml)
agree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pip_pins() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [
        line.strip()
        for line in lines
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _conda_pip_pins() -> list[str]:
    text = (ROOT / "environment.yml").read_text()
    block = text.split("- pip:", 1)[1]
    pins = [
        m.group(1).strip() for m in re.finditer(r"^\s+-\s+(.+)$", block, re.M)
    ]
    return [p for p in pins if p != "-e ."]


def test_conda_and_pip_pins_agree():
    assert _conda_pip_pins() == _pip_pins()


def test_conda_python_is_311():
    assert re.search(
        r"^\s+-\s+python=3\.11\s*$",
        (ROOT / "environment.yml").read_text(),
        re.M,
    )


def test_every_pin_is_exact():
    for pin in _pip_pins():
        assert re.match(r"^[A-Za-z0-9_.\-]+==[^=,]+(,!=.+)?$", pin), (
            f"{pin} is not an exact pin"
        )


def test_installed_versions_match_the_pins():
    from importlib.metadata import version

    for pin in _pip_pins():
        name, wanted = pin.split("==", 1)
        wanted = wanted.split(",")[0]
        installed = version(name).split("+")[0]
        assert installed == wanted, (
            f"{name}: installed {installed}, pinned {wanted}"
        )
