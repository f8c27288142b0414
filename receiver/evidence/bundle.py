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

Every name in the archive is a safe file name (:func:`safe_name`), whatever the cluster or an
alert called the thing it holds: pod and container names become directory and file names, and
an archive is unpacked by people with ``tar -x``, so a name must never climb out of the
bundle's directory, hide, or carry control characters. Names that still collide after that are
made unique.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from receiver.evidence.text import literal
from receiver.redaction import Redactor

__all__ = ["BundleBuilder", "BundleFile", "SourceReport", "WrittenBundle", "safe_name"]

MANIFEST = "manifest.json"
NOTES = "NOTES.md"
TRUNCATION_MARK = b"\n[... cut here: file size limit reached ...]\n"
# Well under the 255 bytes file systems allow for one name: a safe name, and each part of a
# path in the archive, which leaves room for the extensions a caller adds to a safe name.
NAME_LIMIT = 100
PART_LIMIT = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DIGEST_CHARS = 8


def safe_name(name: str, *, limit: int = NAME_LIMIT) -> str:
    """``name`` as one file name: only ``A-Z a-z 0-9 . _ -``, not hidden, at most ``limit``
    characters.

    A name that had to change (a ``/``, ``..``, a control character, too long) ends in a short
    hash of the original, so two names that differ only in what was replaced stay apart. A
    name already safe comes back as it is, so the function can be applied twice.
    """
    cleaned = _UNSAFE.sub("_", name)
    if cleaned.startswith("."):  # ".", ".." and hidden files
        cleaned = "_" + cleaned[1:]
    if cleaned == name and 0 < len(name) <= limit:
        return name
    # surrogatepass: a lone surrogate (valid in a JSON string) still has a hash.
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    return f"{cleaned[: limit - _DIGEST_CHARS - 1] or '_'}-{digest}"


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
    reserved: set[str] = field(default_factory=lambda: {MANIFEST, NOTES})

    def reserve(self, path: str) -> None:
        """Keep ``path`` for a file added later with ``reserved=True``: a file from outside
        asking for it first (a query named like it) gets another name, not this one."""
        self.reserved.add(path)

    def add(
        self,
        path: str,
        content: bytes | str,
        *,
        source: str,
        keep: Literal["head", "tail"] = "head",
        reserved: bool = False,
    ) -> BundleFile | None:
        """Add a file; ``None`` when it was left out because the bundle is full.

        ``path`` is ``/``-separated; each part is made a :func:`safe_name` and a path already
        taken (or reserved, unless ``reserved`` claims it) gets a number
        (``app-2.errors.log``), so the file's name in the archive is the returned entry's
        ``path``. Pass a name from outside through :func:`safe_name` first, so
        that a ``/`` in it does not make a directory. A file over the size limit keeps its
        beginning, or its end for ``keep="tail"`` (a log's newest lines), cut at a line
        boundary where one is near.
        """
        parts = [safe_name(part, limit=PART_LIMIT) for part in path.split("/") if part]
        parts = parts or [safe_name("")]
        path = "/".join(parts)
        claimed = reserved and path in self.reserved - {MANIFEST, NOTES} and path not in self.files
        path = path if claimed else self._unique(path)
        # "replace": a lone surrogate (valid in a JSON string) must not lose the whole bundle.
        data = self.redactor.data(
            content.encode("utf-8", "replace") if isinstance(content, str) else content
        )
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

    def _unique(self, path: str) -> str:
        """``path``, or with ``-2``, ``-3``... before its extensions if already taken."""
        taken = {*self.reserved, *self.files, *(o["path"] for o in self.omitted)}
        if path not in taken:
            return path
        folder, slash, name = path.rpartition("/")
        # The number goes before the extensions, so that they still say what the file is.
        dot = name.find(".", 1)
        stem, extensions = (name, "") if dot < 0 else (name[:dot], name[dot:])
        n = 2
        while f"{folder}{slash}{stem}-{n}{extensions}" in taken:
            n += 1
        return f"{folder}{slash}{stem}-{n}{extensions}"

    def add_json(
        self, path: str, value: Any, *, source: str, reserved: bool = False
    ) -> BundleFile | None:
        # Strings are redacted before encoding too: JSON escapes a backslash, so a secret that
        # a value holds already escaped (``\/``) would be encoded past its forms.
        text = json.dumps(self.redactor.value(value), indent=2, sort_keys=True, default=str) + "\n"
        return self.add(path, text, source=source, reserved=reserved)

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
        # The title and the reasons carry alert data and error messages: literal text.
        lines = [f"# Evidence notes: {literal(title)}", ""]
        problems = [s for s in self.sources if s.status != "collected"]
        if not problems and not self.omitted:
            lines.append("Every source was collected in full.")
        for s in problems:
            status = s.status.replace("_", " ")
            lines.append(f"- **{literal(s.source)}**: {status}: {literal(s.detail)}")
        for o in self.omitted:
            lines.append(f"- **{literal(o['path'])}** left out ({o['bytes']} bytes): {o['reason']}")
        cut = [literal(entry.path) for entry, _ in self.files.values() if entry.truncated]
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
