"""requirements.lock agrees with pyproject.toml: every dependency of the package and of each extra is pinned
at a version its range allows, and the lock pins nothing as a direct dependency that pyproject.toml dropped.
A failure here means: run `make lock`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
FIX = "; run `make lock` and commit requirements.lock"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> tuple[dict[str, Version], set[str]]:
    """({name: pinned version}, names that uv annotated `via jobqueue (pyproject.toml)`)."""
    pins: dict[str, Version] = {}
    direct: set[str] = set()
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            name, sep, version = line.split(";")[0].partition("==")
            assert sep, f"requirements.lock: {line!r} is not pinned with =={FIX}"
            current = canonical(Requirement(name).name)
            pins[current] = Version(version.strip())
        elif current and re.search(r"#\s+(via\s+)?jobqueue \(pyproject\.toml\)", line):
            direct.add(current)
    return pins, direct


def declared() -> dict[str, list[Requirement]]:
    """pyproject.toml's requirements, by group: `dependencies` and each optional extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"dependencies": project["dependencies"], **project.get("optional-dependencies", {})}
    return {group: [Requirement(r) for r in reqs] for group, reqs in groups.items()}


def disagreements(lock_text: str) -> list[str]:
    pins, direct = parse_lock(lock_text)
    problems = []
    names = set()
    for group, reqs in declared().items():
        for req in reqs:
            name = canonical(req.name)
            names.add(name)
            if name not in pins:
                problems.append(f"{req} ({group}) is not in requirements.lock")
            elif not req.specifier.contains(pins[name], prereleases=True):
                problems.append(f"{req} ({group}) does not allow the locked {name}=={pins[name]}")
    problems += [f"requirements.lock pins {name} for jobqueue, which pyproject.toml no longer asks for"
                 for name in sorted(direct - names)]
    return problems


def test_the_lock_pins_every_dependency_of_every_extra_within_its_range():
    assert disagreements((ROOT / "requirements.lock").read_text()) == [], FIX


def test_the_lock_check_catches_a_missing_a_stale_and_an_out_of_range_pin():
    text = (ROOT / "requirements.lock").read_text()
    without_duckdb = re.sub(r"(?m)^duckdb==.*\n(\s+#.*\n)*", "", text)
    assert disagreements(without_duckdb) == ["duckdb<3,>=2.0 (dependencies) is not in requirements.lock"]
    old_duckdb = re.sub(r"(?m)^duckdb==.*$", "duckdb==1.4.0", text)
    assert disagreements(old_duckdb) == ["duckdb<3,>=2.0 (dependencies) does not allow the locked duckdb==1.4.0"]
    stale = text + "leftover==1.0\n    # via jobqueue (pyproject.toml)\n"
    assert disagreements(stale) == [
        "requirements.lock pins leftover for jobqueue, which pyproject.toml no longer asks for"]


def test_the_lock_is_for_every_extra_and_pins_duckdb_at_the_version_main_runs():
    header = (ROOT / "requirements.lock").read_text().splitlines()[:2]
    assert header[1].strip() == "#    make lock", header
    makefile = (ROOT / "Makefile").read_text()
    assert "--all-extras --python-version 3.11" in makefile
    pins, _ = parse_lock((ROOT / "requirements.lock").read_text())
    assert pins["duckdb"] == Version("2.0.1")  # out of memory is handled (engine/duckdb_run.py)
