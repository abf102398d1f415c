"""The lock (constraints.txt) covers the whole install: a dependency added to pyproject.toml without refreshing
the lock (scripts/refresh_lock.sh) would reach a fresh install at whatever version PyPI has that day."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not an exact pin (NAME==VERSION)"
            pins[canonicalize_name(name)] = version
    return pins


def dependency_closure(requirements: list[Requirement]) -> set[str]:
    """Every installed distribution the requirements pull in, following each one's own requirements."""
    seen: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a marker-excluded or optional dependency that is not installed
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in (extras or {""})):
                todo.append((sub, frozenset(sub.extras)))
    return {k.split("[", 1)[0] for k in seen}


def test_every_installed_dependency_of_the_project_and_its_dev_extra_is_pinned_at_its_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    pins = locked()
    unpinned, other = [], []
    for name in sorted(dependency_closure(direct)):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if name not in pins:
            unpinned.append(f"{name}=={version}")
        elif pins[name] != version:
            other.append(f"{name}: installed {version}, locked {pins[name]}")
    assert not unpinned, f"not in constraints.txt (run scripts/refresh_lock.sh): {unpinned}"
    assert not other, f"installed versions differ from the lock: {other}"


def test_the_lock_pins_the_tested_torch_pair():
    pins = locked()
    assert pins["torch"] == "2.14.1"
    assert pins["torchvision"] == "0.29.1"
