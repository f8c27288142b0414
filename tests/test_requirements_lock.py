"""requirements.lock, from which the image installs its runtime dependencies, matches
pyproject.toml.

Re-resolving needs the package index, which the test suite does not reach; instead the lock is
checked against what it must contain: every runtime requirement of pyproject.toml, pinned to a
version its specifier allows, and the whole dependency closure of those requirements (read from
the installed packages' metadata) with each pin allowed by every requirement on it, nothing
else, and a hash for every pin. ``./dev.sh lock`` rewrites the lock after a change.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")


@dataclass
class Pin:
    version: Version
    hashes: list[str] = field(default_factory=list)


def read_lock(text: str) -> dict[NormalizedName, Pin]:
    """The pins of a pip requirements file with hashes (``name==version \\`` then hashes)."""
    pins: dict[NormalizedName, Pin] = {}
    current: Pin | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip().rstrip("\\").strip()
        if not line:
            continue
        if match := PIN.match(line):
            name = canonicalize_name(match["name"])
            assert name not in pins, f"{name} is pinned twice"
            current = pins[name] = Pin(Version(match["version"]))
        elif line.startswith("--hash=") and current is not None:
            current.hashes.append(line.removeprefix("--hash="))
        else:
            raise AssertionError(f"unexpected line in the lock: {raw!r}")
    return pins


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(r) for r in project["dependencies"]]


def applies(requirement: Requirement, extras: set[str]) -> bool:
    """Whether ``requirement`` is needed here (Python 3.11 on Linux, as in the image)."""
    if requirement.marker is None:
        return True
    environments = [{**default_environment(), "extra": e} for e in (extras or {""})]
    return any(requirement.marker.evaluate(env) for env in environments)


def closure_problems(pins: dict[NormalizedName, Pin]) -> list[str]:
    """What is wrong with ``pins`` as the closure of pyproject's runtime requirements."""
    problems: list[str] = []
    needed: set[NormalizedName] = set()
    todo: list[tuple[Requirement, str]] = [(r, "pyproject.toml") for r in runtime_requirements()]
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    while todo:
        requirement, by = todo.pop()
        name = canonicalize_name(requirement.name)
        needed.add(name)
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{name} (required by {by}) is not in the lock")
            continue
        if not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{name}=={pin.version} does not satisfy {by}'s {requirement}")
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed here, so its dependencies cannot be read")
            continue
        for text in requires:
            dependency = Requirement(text)
            if applies(dependency, set(requirement.extras)):
                todo.append((dependency, name))
    problems += [f"{name} is pinned but nothing needs it" for name in sorted(set(pins) - needed)]
    return problems


def test_every_runtime_requirement_is_pinned_within_its_specifier() -> None:
    """Each dependency of pyproject.toml has exactly one pin, allowed by its specifier."""
    pins = read_lock(LOCK.read_text(encoding="utf-8"))
    for requirement in runtime_requirements():
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} is missing: run ./dev.sh lock"
        assert requirement.specifier.contains(pin.version), f"{requirement} vs {pin.version}"


def test_the_lock_is_exactly_the_closure_of_the_runtime_requirements() -> None:
    """Nothing the runtime dependencies need is missing, nothing else is pinned, and every
    pin satisfies every requirement on it."""
    assert closure_problems(read_lock(LOCK.read_text(encoding="utf-8"))) == []


def test_every_pin_has_a_hash() -> None:
    """pip installs the lock with --require-hashes: every pin carries its sha256 hashes."""
    pins = read_lock(LOCK.read_text(encoding="utf-8"))
    assert pins
    for name, pin in pins.items():
        assert pin.hashes, name
        assert all(h.startswith("sha256:") for h in pin.hashes), name


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda pins: pins.pop(canonicalize_name("multidict")), "multidict (required by"),
        (lambda pins: pins.pop(canonicalize_name("aiohttp")), "aiohttp (required by pyproject"),
        (
            lambda pins: pins.__setitem__(canonicalize_name("pydantic"), Pin(Version("1.10"))),
            "pydantic==1.10 does not satisfy pyproject.toml's pydantic>=2.6",
        ),
        (
            lambda pins: pins.__setitem__(canonicalize_name("requests"), Pin(Version("2.0"))),
            "requests is pinned but nothing needs it",
        ),
    ],
    ids=["transitive-missing", "direct-missing", "too-old", "stray"],
)
def test_the_check_catches_a_stale_lock(
    edit: Callable[[dict[NormalizedName, Pin]], object], problem: str
) -> None:
    """A lock missing a (transitive) dependency, pinning outside a specifier or pinning
    something unused is reported (so the passing check above means something)."""
    pins = read_lock(LOCK.read_text(encoding="utf-8"))
    edit(pins)
    assert any(p.startswith(problem) for p in closure_problems(pins)), closure_problems(pins)
