"""constraints.txt — the exact versions the venv and CI install — must cover every dependency pyproject.toml
declares, inside its ranges, and be what this venv has: a dependency added without 'make lock', or a range
moved past the pinned version, fails here instead of installing an untested release in CI."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for n, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and name and version, f"constraints.txt line {n}: not 'name==version': {line!r}"
        key = canonicalize_name(name)
        assert key not in pins, f"constraints.txt line {n}: {name} pinned twice"
        pins[key] = Version(version)
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for group in project.get("optional-dependencies", {}).values() for r in group]
    env = {k: str(v) for k, v in default_environment().items()}
    return [r for r in reqs if r.marker is None or r.marker.evaluate({**env, "extra": ""})]


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    pins = _pins()
    for req in _declared():
        key = canonicalize_name(req.name)
        assert key in pins, f"{req.name} (pyproject.toml) is not in constraints.txt: run 'make lock'"
        assert req.specifier.contains(pins[key], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[key]}, outside pyproject.toml's {req}: run 'make lock'")


def test_the_venv_has_the_pinned_versions() -> None:
    """What the suite runs with is what constraints.txt says (so its result vouches for the file)."""
    wrong = []
    for key, version in _pins().items():
        try:
            have = Version(metadata.version(key))
        except metadata.PackageNotFoundError:
            continue  # a pin for another platform's or Python's dependency
        if have != version:
            wrong.append(f"{key}: {have} installed, {version} pinned")
    assert not wrong, "; ".join(wrong) + " (run 'make venv' to install the pinned versions)"
