"""The evidence bundle: a ``.tar.gz`` with a ``manifest.json``, bounded in size.

Why limits in two places: one noisy pod can log gigabytes in an hour, and evidence is written
exactly when things are going wrong, so it must never be what fills the disk. Every file is cut
at ``max_file_bytes`` (and marked truncated); once the bundle's content reaches
``max_bundle_bytes``, further files are left out and listed as omitted. Sources are added most
useful first (timeline, metrics, events, then logs), so what is left out is the bulk.

Every file, the manifest and the notes pass through the bundle's
:class:`~receiver.redaction.Redactor` before anything is measured or cut: collected logs and
events are other programs' output, and may hold a configured secret.

The manifest says what was collected (each file's size and sha256), what was cut or left out,
and which sources failed and why; ``NOTES.md`` says the same for a person. The archive is
written to a temporary file and renamed into place, so a crash never leaves half a bundle
under the final name.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from receiver.redaction import Redactor

__all__ = ["BundleBuilder", "BundleFile", "SourceReport", "WrittenBundle"]

MANIFEST = "manifest.json"
NOTES = "NOTES.md"
TRUNCATION_MARK = b"\n[... cut here: file size limit reached ...]\n"


@dataclass(frozen=True)
class BundleFile:
    """One file in the bundle, as the manifest lists it."""

    path: str
    source: str
    bytes: int
    sha256: str
    truncated: bool = False
    original_bytes: int | None = None


@dataclass(frozen=True)
class SourceReport:
    """What happened to one source of evidence."""

    source: str
    status: Literal["collected", "partial", "failed", "not_configured"]
    detail: str = ""


@dataclass(frozen=True)
class WrittenBundle:
    """A bundle on disk."""

    path: Path
    bytes: int
    sha256: str
    failed_sources: list[str]


@dataclass
class BundleBuilder:
    """Collects files in memory within the size limits, then writes one archive; every
    secret ``redactor`` knows is replaced in what it holds."""

    max_file_bytes: int
    max_bundle_bytes: int
    redactor: Redactor
    files: dict[str, tuple[BundleFile, bytes]] = field(default_factory=dict)
    omitted: list[dict[str, Any]] = field(default_factory=list)
    sources: list[SourceReport] = field(default_factory=list)
    content_bytes: int = 0

    def add(
        self,
        path: str,
        content: bytes | str,
        *,
        source: str,
        keep: Literal["head", "tail"] = "head",
    ) -> BundleFile | None:
        """Add a file; ``None`` when it was left out because the bundle is full.

        A file over the size limit keeps its beginning, or its end for ``keep="tail"``
        (a log's newest lines), cut at a line boundary where one is near.
        """
        if path in (MANIFEST, NOTES) or path in self.files:
            raise ValueError(f"bundle path used twice or reserved: {path}")
        data = self.redactor.data(content.encode("utf-8") if isinstance(content, str) else content)
        original = len(data)
        truncated = original > self.max_file_bytes
        if truncated:
            data = _cut(data, self.max_file_bytes - len(TRUNCATION_MARK), keep)
        if self.content_bytes + len(data) > self.max_bundle_bytes:
            self.omitted.append(
                {"path": path, "source": source, "bytes": original, "reason": "bundle size limit"}
            )
            return None
        entry = BundleFile(
            path=path,
            source=source,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            truncated=truncated,
            original_bytes=original if truncated else None,
        )
        self.files[path] = (entry, data)
        self.content_bytes += len(data)
        return entry

    def add_json(self, path: str, value: Any, *, source: str) -> BundleFile | None:
        # Strings are redacted before encoding too: JSON escapes a backslash, so a secret that
        # a value holds already escaped (``\/``) would be encoded past its forms.
        text = json.dumps(self.redactor.value(value), indent=2, sort_keys=True, default=str) + "\n"
        return self.add(path, text, source=source)

    def report(
        self,
        source: str,
        status: Literal["collected", "partial", "failed", "not_configured"],
        detail: str = "",
    ) -> None:
        """Record the outcome of one source (a failure becomes a note in the bundle)."""
        self.sources.append(SourceReport(source, status, detail))

    @property
    def failed(self) -> list[SourceReport]:
        return [s for s in self.sources if s.status in ("failed", "partial")]

    def manifest(self, *, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            **meta,
            "limits": {
                "max_file_bytes": self.max_file_bytes,
                "max_bundle_bytes": self.max_bundle_bytes,
            },
            "content_bytes": self.content_bytes,
            "files": [asdict(entry) for entry, _ in self.files.values()],
            "omitted": self.omitted,
            "sources": [asdict(s) for s in self.sources],
            "failed_sources": [{"source": s.source, "reason": s.detail} for s in self.failed],
        }

    def notes(self, *, title: str) -> str:
        lines = [f"# Evidence notes: {title}", ""]
        problems = [s for s in self.sources if s.status != "collected"]
        if not problems and not self.omitted:
            lines.append("Every source was collected in full.")
        for s in problems:
            lines.append(f"- **{s.source}**: {s.status.replace('_', ' ')}: {s.detail}")
        for o in self.omitted:
            lines.append(f"- **{o['path']}** left out ({o['bytes']} bytes): {o['reason']}")
        cut = [entry.path for entry, _ in self.files.values() if entry.truncated]
        if cut:
            lines.append(f"- Cut at {self.max_file_bytes} bytes: {', '.join(cut)}")
        return "\n".join(lines) + "\n"

    def write(
        self, directory: Path, *, stem: str, meta: dict[str, Any], created_at: float
    ) -> WrittenBundle:
        """Write ``<directory>/<stem>.tar.gz`` atomically; files sit under ``<stem>/``."""
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / f"{stem}.tar.gz"
        notes = self.redactor.text(self.notes(title=str(meta.get("title", stem)))).encode("utf-8")
        manifest = self.manifest(meta={**meta, "created_at": _iso(created_at), "notes": NOTES})
        # Source details are error texts (a failed query, a refused log read).
        listing = json.dumps(self.redactor.value(manifest), indent=2, sort_keys=True) + "\n"
        payload = self.redactor.text(listing).encode("utf-8")
        members = [(MANIFEST, payload), (NOTES, notes)]
        members += [(entry.path, data) for entry, data in self.files.values()]
        fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=directory)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as raw:
                # mtime=0 in the gzip header: the same content gives the same bytes.
                with (
                    gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
                ):
                    for name, data in members:
                        info = tarfile.TarInfo(f"{stem}/{name}")
                        info.size = len(data)
                        info.mtime = int(created_at)
                        info.mode = 0o644
                        tar.addfile(info, io.BytesIO(data))
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        digest = hashlib.sha256()
        with final.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return WrittenBundle(
            path=final,
            bytes=final.stat().st_size,
            sha256=digest.hexdigest(),
            failed_sources=[s.source for s in self.failed],
        )


def _cut(data: bytes, limit: int, keep: Literal["head", "tail"]) -> bytes:
    limit = max(0, limit)
    if keep == "head":
        cut = data.rfind(b"\n", 0, limit)
        return data[: cut + 1 if cut >= limit // 2 else limit] + TRUNCATION_MARK
    start = len(data) - limit
    nl = data.find(b"\n", start)
    begin = nl + 1 if 0 <= nl < start + limit // 2 else start
    return TRUNCATION_MARK.lstrip(b"\n") + data[begin:]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
