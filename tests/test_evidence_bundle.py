"""The bundle archive: manifest, checksums, size limits and notes."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from pathlib import Path
from typing import Any

from receiver.evidence.bundle import TRUNCATION_MARK, BundleBuilder, safe_name
from receiver.redaction import Redactor
from tests.rendered_markdown import HOSTILE, HOSTILE_SHOWN, render


def _open(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    stem = path.name.removesuffix(".tar.gz")
    files: dict[str, bytes] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            assert member.name.startswith(f"{stem}/")
            handle = tar.extractfile(member)
            assert handle is not None
            files[member.name.removeprefix(f"{stem}/")] = handle.read()
    return json.loads(files["manifest.json"]), files


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path: Path) -> None:
    """Each file's size and sha256 in the manifest match the archived content."""
    b = BundleBuilder(max_file_bytes=10_000, max_bundle_bytes=100_000, redactor=Redactor())
    b.add("incident.json", '{"id": "inc-1"}\n', source="timeline")
    b.add_json("metrics/q.json", {"series": []}, source="prometheus:q")
    b.report("timeline", "collected")
    written = b.write(tmp_path, stem="inc-1-opened", meta={"incident_id": "inc-1"}, created_at=0)
    manifest, files = _open(written.path)
    assert manifest["incident_id"] == "inc-1"
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == {"incident.json", "metrics/q.json"}
    for path, entry in listed.items():
        assert entry["bytes"] == len(files[path])
        assert entry["sha256"] == hashlib.sha256(files[path]).hexdigest()
    assert "NOTES.md" in files
    assert written.sha256 == hashlib.sha256(written.path.read_bytes()).hexdigest()
    assert written.bytes == written.path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["inc-1-opened.tar.gz"]


def test_a_file_over_the_limit_is_cut_and_marked(tmp_path: Path) -> None:
    """A file longer than max_file_bytes is cut to the limit and marked truncated."""
    b = BundleBuilder(max_file_bytes=2048, max_bundle_bytes=100_000, redactor=Redactor())
    text = "".join(f"line {n:05d}\n" for n in range(1000))
    head = b.add("head.log", text, source="pod_logs")
    tail = b.add("tail.log", text, source="pod_logs", keep="tail")
    assert head is not None
    assert tail is not None
    assert head.truncated
    assert head.original_bytes == len(text)
    assert head.bytes <= 2048
    assert tail.bytes <= 2048
    _, files = _open(b.write(tmp_path, stem="s", meta={}, created_at=0).path)
    assert files["head.log"].startswith(b"line 00000\n")
    assert files["head.log"].endswith(TRUNCATION_MARK)
    assert files["tail.log"].endswith(b"line 00999\n")
    # Cut at line boundaries: no half lines besides the marker.
    body = files["tail.log"].split(b"]\n", 1)[1]
    assert all(len(line) == 10 for line in body.splitlines())


def test_files_past_the_bundle_limit_are_left_out_and_listed(tmp_path: Path) -> None:
    """Once the bundle's content reaches max_bundle_bytes, later files are omitted and listed."""
    b = BundleBuilder(max_file_bytes=4096, max_bundle_bytes=10_000, redactor=Redactor())
    for n in range(5):
        b.add(f"logs/pod-{n}.log", "x" * 4000, source="pod_logs")
    manifest, files = _open(b.write(tmp_path, stem="s", meta={}, created_at=0).path)
    assert sorted(f["path"] for f in manifest["files"]) == ["logs/pod-0.log", "logs/pod-1.log"]
    assert [o["path"] for o in manifest["omitted"]] == [f"logs/pod-{n}.log" for n in (2, 3, 4)]
    assert manifest["content_bytes"] <= 10_000
    assert "logs/pod-4.log" not in files
    assert b"logs/pod-4.log** left out" in files["NOTES.md"]


def test_failed_sources_are_in_the_manifest_and_the_notes(tmp_path: Path) -> None:
    """A failed source is listed with its reason in manifest.json and NOTES.md."""
    b = BundleBuilder(max_file_bytes=4096, max_bundle_bytes=10_000, redactor=Redactor())
    b.report("prometheus:errors", "failed", "cannot reach Prometheus")
    b.report("pod_logs", "partial", "pod-a/app: 403 Forbidden")
    b.report("events", "collected", "3 events")
    written = b.write(tmp_path, stem="s", meta={}, created_at=0)
    manifest, files = _open(written.path)
    assert manifest["failed_sources"] == [
        {"source": "prometheus:errors", "reason": "cannot reach Prometheus"},
        {"source": "pod_logs", "reason": "pod-a/app: 403 Forbidden"},
    ]
    assert written.failed_sources == ["prometheus:errors", "pod_logs"]
    notes = files["NOTES.md"].decode()
    assert "**prometheus:errors**: failed: cannot reach Prometheus" in notes
    assert "events" not in notes


def test_the_same_content_gives_the_same_archive(tmp_path: Path) -> None:
    """Two bundles of identical content and time are byte-identical (reproducible)."""
    digests = set()
    for name in ("a", "b"):
        b = BundleBuilder(max_file_bytes=4096, max_bundle_bytes=10_000, redactor=Redactor())
        b.add("x.txt", "same\n", source="t")
        digests.add(b.write(tmp_path / name, stem="s", meta={}, created_at=100).sha256)
    assert len(digests) == 1


# Names as a cluster or an alert could give them: a path out of the bundle, an absolute
# path, the current and parent directory, a hidden file, NUL and control characters, an
# overlong name, and two names that differ only in a character that has to be replaced.
HOSTILE_NAMES = [
    "../../../etc/cron.d/x",
    "/etc/passwd",
    ".",
    "..",
    ".hidden",
    "nul\x00byte",
    "ctrl\x1b[31m\x7f\n",
    "lone\ud800surrogate",
    "",
    "x" * 300,
    "a/b",
    "a:b",
    "a_b",
]
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
# A part of a path in the archive: a safe name, with room for the extensions added to it.
SAFE_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")


def _member_names(path: Path) -> list[str]:
    with tarfile.open(path, "r:gz") as tar:
        return tar.getnames()


def _assert_safe_members(path: Path) -> list[str]:
    """Every member lies under the bundle's directory, each part of its name a safe file
    name; returns the names inside that directory."""
    stem = path.name.removesuffix(".tar.gz")
    names = _member_names(path)
    assert len(set(names)) == len(names)
    inside = []
    for name in names:
        top, _, rest = name.partition("/")
        assert top == stem
        assert all(SAFE_PART.fullmatch(part) for part in rest.split("/")), name
        inside.append(rest)
    return inside


def test_names_from_outside_become_safe_unique_file_names(tmp_path: Path) -> None:
    """Pod, container and other outside names, used as they are or as a whole path, become
    member names that stay inside the bundle, are not hidden, carry no control characters,
    are at most 100 characters a part and never collide."""
    b = BundleBuilder(max_file_bytes=10_000, max_bundle_bytes=1_000_000, redactor=Redactor())
    added = []
    for name in HOSTILE_NAMES:
        added.append(b.add(f"logs/{safe_name(name)}/{safe_name(name)}.tail.log", name, source="x"))
        added.append(b.add(name, name, source="x"))  # a caller that forgot safe_name
    paths = [entry.path for entry in added if entry is not None]
    assert len(paths) == 2 * len(HOSTILE_NAMES)
    inside = _assert_safe_members(b.write(tmp_path, stem="s", meta={}, created_at=0).path)
    assert set(paths) <= set(inside)
    assert len(set(paths)) == len(paths)
    # "a_b" is safe and kept as it is; the names that had to change keep their own name.
    assert "logs/a_b/a_b.tail.log" in paths
    assert len({p for p in paths if p.startswith("logs/a_")}) == 3


def test_safe_name_keeps_safe_names_and_is_stable() -> None:
    """A safe name is kept; a changed one is the same every time, and safe itself."""
    assert safe_name("posthog-integration-5f7-abc") == "posthog-integration-5f7-abc"
    for name in HOSTILE_NAMES:
        once = safe_name(name)
        assert SAFE_NAME.fullmatch(once)
        assert safe_name(once) == once
        assert safe_name(name) == once


def test_a_path_used_twice_or_reserved_gets_a_number(tmp_path: Path) -> None:
    """A second file under a taken name gets a number before its extensions; a reserved name
    goes only to the file that claims it, and manifest.json and NOTES.md stay ours."""
    b = BundleBuilder(max_file_bytes=10_000, max_bundle_bytes=100_000, redactor=Redactor())
    b.reserve("metrics/summary.json")
    first = b.add("logs/p/app.errors.log", "1", source="pod_logs")
    second = b.add("logs/p/app.errors.log", "2", source="pod_logs")
    query = b.add_json("metrics/summary.json", {"query": True}, source="prometheus:summary")
    summary = b.add_json("metrics/summary.json", {"summary": True}, source="s", reserved=True)
    manifest = b.add("manifest.json", "not the manifest", source="x")
    entries = [first, second, query, summary, manifest]
    assert all(e is not None for e in entries)
    first, second, query, summary, manifest = (e for e in entries if e is not None)
    assert (first.path, second.path) == ("logs/p/app.errors.log", "logs/p/app-2.errors.log")
    assert (query.path, summary.path) == ("metrics/summary-2.json", "metrics/summary.json")
    assert manifest.path == "manifest-2.json"
    _, files = _open(b.write(tmp_path, stem="s", meta={}, created_at=0).path)
    assert json.loads(files["metrics/summary.json"]) == {"summary": True}
    assert files["logs/p/app-2.errors.log"] == b"2"
    assert "files" in json.loads(files["manifest.json"])


def test_notes_show_titles_and_reasons_as_text(tmp_path: Path) -> None:
    """A title or a failure reason carrying Markdown or HTML shows as text in NOTES.md."""
    b = BundleBuilder(max_file_bytes=10_000, max_bundle_bytes=100_000, redactor=Redactor())
    b.report("pod_logs", "failed", HOSTILE)
    _, files = _open(b.write(tmp_path, stem="s", meta={"title": HOSTILE}, created_at=0).path)
    shown = render(files["NOTES.md"].decode())
    assert [tag for tag, _ in shown.elements] == ["h1", "ul", "li", "strong"]
    assert shown.text.count(HOSTILE_SHOWN) == 2


def test_secrets_are_redacted_in_files_manifest_and_notes(tmp_path: Path) -> None:
    """A secret in a file, a JSON file (escaped) or a source's failure reason is archived as
    [redacted], and the manifest's sizes and checksums are those of what was archived."""
    secret = "https://hooks.slack.com/services/T0/B0/tok3nTok3nTok3n"
    b = BundleBuilder(max_file_bytes=4096, max_bundle_bytes=10_000, redactor=Redactor([secret]))
    b.add("logs/pod.log", f"ERROR posting to {secret}\n", source="pod_logs")
    b.add_json("events.json", [{"message": f"webhook {secret} refused"}], source="events")
    b.report("pod_logs", "partial", f"pod-a/app: 403 for {secret}")
    manifest, files = _open(b.write(tmp_path, stem="s", meta={}, created_at=0).path)
    assert files["logs/pod.log"] == b"ERROR posting to [redacted]\n"
    # json.dumps leaves '/' alone; the escaped form of other characters is covered too.
    assert b"webhook [redacted] refused" in files["events.json"]
    assert "pod-a/app: 403 for [redacted]" in files["NOTES.md"].decode()
    assert manifest["failed_sources"] == [
        {"source": "pod_logs", "reason": "pod-a/app: 403 for [redacted]"}
    ]
    for entry in manifest["files"]:
        content = files[entry["path"]]
        assert (entry["bytes"], entry["sha256"]) == (
            len(content),
            hashlib.sha256(content).hexdigest(),
        )
    for content in files.values():
        assert b"tok3nTok3nTok3n" not in content
