"""The intake spool: where a webhook is durably written before it is acknowledged.

A webhook is answered 200 only once it is durably stored. Appending it to a file is the
cheapest durable write there is; committing it to SQLite on the way cost about half of each
request (docs/benchmarks.md). So the intake appends accepted webhooks to the spool, many per
write, and the worker moves them into the store's inbox in large batches: after the burst of
requests that brought them, or a chunk at a time while one lasts.

Durability follows ``store.synchronous``. ``normal``: a spooled webhook is in the operating
system's page cache when it is acknowledged, so it survives a crash or kill of this process
(as SQLite's WAL does in ``normal``). ``full``: every write is followed by an ``fdatasync``
(one per group of webhooks written together) and a new segment by an fsync of the directory,
so it survives power loss as well.

Layout: a directory beside the database (``<database>.spool``) of segment files
``00000001.seg``, ``00000002.seg``, ... Each is a run of records, little-endian::

    u32 length | u32 crc32 | f64 received at | u16 key length | u32 group key length
    | dedup key | group key | body

where length and crc32 cover everything after them. The intake appends to one segment until it
is ``store.spool_segment_mib`` long, then starts the next. A segment is deleted once every record
in it is committed to the inbox. After a restart the intake writes a new segment and the worker
moves the old ones first: a record moved before a crash but not yet deleted is moved again and
recognised as a repeat by the inbox (not processed twice).

Damage. Only the newest segment left by the last run can end in a record cut short by a crash
during its write: that record was never acknowledged, and is dropped with a warning. Any other
record that fails its length or checksum was acknowledged: it is skipped on its own, reading
resynchronises at the next whole record (one whose checksum holds), the loss is logged as an
ERROR and counted (``posthog_receiver_spool_damaged_total``), and once the rest of the segment is
in the inbox the segment is kept aside in ``quarantine/`` for a person to look at, never deleted.

What is spooled and not yet moved is bounded by ``store.spool_max_mib``: past it webhooks are
answered 503 and Alertmanager sends them again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from receiver.config import StoreSettings
from receiver.store import StoreUnavailable, now

__all__ = [
    "Received",
    "RecentKeys",
    "Spool",
    "SpoolCursor",
    "SpoolUnavailable",
    "Spooled",
    "spool_directory",
]

logger = structlog.get_logger(__name__)

# (dedup key, group key, body): what the inbox stores of a received webhook.
Spooled = tuple[str, str, bytes]
# The same, read back, with when it was received (Unix seconds).
Received = tuple[str, str, bytes, float]

_HEAD = struct.Struct("<II")  # length, crc32 of what follows
_FIXED = struct.Struct("<dHI")  # received at, key length, group key length
_SUFFIX = ".seg"
QUARANTINE = "quarantine"


class SpoolUnavailable(StoreUnavailable):
    """The spool cannot take a webhook now (full, or the disk refused the write): answer 503."""


def spool_directory(settings: StoreSettings) -> Path:
    """The spool beside the database, on the same volume."""
    return settings.path.with_name(settings.path.name + ".spool")


def encode(record: Spooled, received_at: float) -> bytes:
    key, group, body = record
    key_bytes = key.encode()
    group_bytes = group.encode()
    fixed = _FIXED.pack(received_at, len(key_bytes), len(group_bytes))
    crc = zlib.crc32(body, zlib.crc32(group_bytes, zlib.crc32(key_bytes, zlib.crc32(fixed))))
    length = _FIXED.size + len(key_bytes) + len(group_bytes) + len(body)
    return b"".join((_HEAD.pack(length, crc), fixed, key_bytes, group_bytes, body))


def _decode(rest: bytes) -> Received:
    received_at, key_len, group_len = _FIXED.unpack_from(rest, 0)
    at = _FIXED.size
    key = rest[at : at + key_len].decode()
    at += key_len
    group = rest[at : at + group_len].decode()
    return key, group, rest[at + group_len :], received_at


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int  # bytes of whole records written
    read: int = 0  # bytes of records committed to the inbox
    closed: bool = True  # no longer written to
    newest_of_last_run: bool = False  # its end may be a record a crash cut short
    damaged_at: set[int] = field(default_factory=set)  # damage found (reported once each)


@dataclass(frozen=True)
class SpoolCursor:
    """Where a read ended: hand it to :meth:`Spool.consumed` once its records are committed."""

    seq: int
    offset: int


@dataclass
class _Write:
    data: bytes
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


class Spool:
    """Append-only segments of received webhooks, written by one thread of their own."""

    def __init__(
        self,
        directory: Path,
        *,
        sync: bool,
        segment_bytes: int,
        max_bytes: int,
        on_damage: Callable[[], None] = lambda: None,
        probe_bytes: int = 0,
    ) -> None:
        self.directory = directory
        # After a failed write, readiness writes a record this large (the largest webhook
        # accepted) to find out whether one can be stored again.
        self._probe: Spooled = ("", "", b" " * probe_bytes)
        self._on_damage = on_damage  # called once for each damaged run of acknowledged records
        self._sync = sync
        self._segment_bytes = segment_bytes
        self._max_bytes = max_bytes
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._fd = -1
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reserved = 0  # bytes handed to the writer and not yet written
        self._full = False  # a write was refused for want of room, and nothing moved since
        self._failing = False  # the last write failed (disk full, not writable)
        self.writes = 0

    @classmethod
    def for_store(
        cls,
        settings: StoreSettings,
        *,
        on_damage: Callable[[], None] = lambda: None,
        probe_bytes: int = 0,
    ) -> Spool:
        return cls(
            spool_directory(settings),
            sync=settings.synchronous == "full",
            segment_bytes=settings.spool_segment_mib * 1024 * 1024,
            max_bytes=settings.spool_max_mib * 1024 * 1024,
            on_damage=on_damage,
            probe_bytes=probe_bytes,
        )

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> list[str]:
        """Find the segments left by the last run, start a new one, start the writer thread.

        Returns the dedup keys of the webhooks still in the spool (not yet in the inbox), so
        that the intake recognises their resends.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        keys: list[str] = []
        for path in sorted(self.directory.glob("*" + _SUFFIX)):
            try:
                seq = int(path.stem)
            except ValueError:
                logger.warning("not a spool segment; left alone", path=str(path))
                continue
            segment = _Segment(seq, path, path.stat().st_size)
            if not segment.size:  # started, never written to
                path.unlink()
                continue
            self._segments.append(segment)
        if self._segments:
            self._segments[-1].newest_of_last_run = True
        for segment in list(self._segments):
            # Keys only: the bodies are read again when the worker moves them.
            keys.extend(record[0] for record, _ in self._records(segment) if record is not None)
            if not segment.size:  # all of it a record cut short, now cut off
                segment.path.unlink()
                self._segments.remove(segment)
        if self._segments:
            logger.info(
                "spool found from the last run",
                segments=len(self._segments),
                webhooks=len(keys),
                bytes=self.pending_bytes,
            )
        self._start_segment()
        self._writer = threading.Thread(target=self._write_loop, name="spool-writer", daemon=True)
        self._writer.start()
        return keys

    def close(self) -> None:
        """Finish the writes handed over, stop the writer thread, close the file. A write asked
        for meanwhile is refused with :class:`SpoolUnavailable`, never left waiting."""
        if self._writer is not None:
            writer, self._writer = self._writer, None  # appends from now on: refused
            self._jobs.put(None)
            writer.join()
            closed = SpoolUnavailable("spool is closed")
            with contextlib.suppress(queue.Empty):
                while True:  # appends asked for just before, queued behind the stop
                    job = self._jobs.get_nowait()
                    if job is not None:
                        with contextlib.suppress(RuntimeError):  # that loop is closed
                            job.loop.call_soon_threadsafe(_settle, job.future, closed)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with self._lock:
            if self._active is not None:  # deleted if empty or all moved into the inbox
                self._active.closed = True
                self._drop_if_moved(self._active)
            self._active = None

    def _start_segment(self) -> None:
        """Close the segment being written and start the next (called with no write running)."""
        seq = max((s.seq for s in self._segments), default=0) + 1
        path = self.directory / f"{seq:08d}{_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        if self._sync:
            _fsync_directory(self.directory)
        old_fd = self._fd
        with self._lock:
            if self._active is not None:
                self._active.closed = True
                self._drop_if_moved(self._active)
            self._fd = fd
            self._active = _Segment(seq, path, 0, closed=False)
            self._segments.append(self._active)
        if old_fd >= 0:
            os.close(old_fd)

    # -- intake side -------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """Whether a webhook can be spooled now: open, not full, and the last write worked."""
        alive = self._writer is not None and self._writer.is_alive()
        return alive and not self._full and not self._failing

    async def writable(self) -> bool:
        """Whether a webhook can be spooled now (for readiness). After a failed write, a
        probe record (an empty key: skipped when read) is written the way a webhook is, to
        find out: a pod that is not ready gets no webhooks that would tell it."""
        if self._failing and self._writer is not None:
            with contextlib.suppress(SpoolUnavailable):
                await self.append([self._probe])
        return self.accepting

    @property
    def pending_bytes(self) -> int:
        """Bytes spooled and not yet committed to the inbox."""
        with self._lock:
            return sum(s.size - s.read for s in self._segments)

    async def append(self, records: Sequence[Spooled]) -> None:
        """Write ``records`` durably (see the module's note); raise :class:`SpoolUnavailable`
        if they cannot be (full, disk error, closed). Nothing of a failed write is kept."""
        if self._writer is None:
            raise SpoolUnavailable("spool is not open")
        received_at = now()
        data = b"".join([encode(r, received_at) for r in records])
        if self.pending_bytes + self._reserved + len(data) > self._max_bytes:
            self._full = True
            raise SpoolUnavailable(
                f"spool full: {self.pending_bytes} bytes wait to be moved into the inbox"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._reserved += len(data)
        try:
            self._jobs.put(_Write(data, future, loop))
            await future
        finally:
            self._reserved -= len(data)
        self.writes += 1

    def _write_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            error: BaseException | None = None
            try:
                self._write(job.data)
            except Exception as e:  # a bug too: answer 503 and keep the writer alive
                error = SpoolUnavailable(f"spool write failed: {e}")
                # The log may be on the disk that just refused: its failure must not stop
                # this thread, or every webhook after it would wait for ever.
                with contextlib.suppress(Exception):
                    if isinstance(e, OSError):
                        logger.error("spool write failed", error=str(e), bytes=len(job.data))
                    else:
                        logger.exception("spool write failed unexpectedly", bytes=len(job.data))
            self._failing = error is not None
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                job.loop.call_soon_threadsafe(_settle, job.future, error)

    def _write(self, data: bytes) -> None:
        active = self._active
        assert active is not None
        if active.size and (
            active.size + len(data) > self._segment_bytes or active.read >= active.size
        ):
            # Full, or every record in it is already in the inbox: start the next segment,
            # so that this one can be deleted.
            self._start_segment()
            active = self._active
            assert active is not None
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
            if self._sync:
                os.fdatasync(self._fd)
        except OSError:
            # Leave no part of a failed write behind: the records were not acknowledged.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, active.size)
            raise
        with self._lock:
            active.size += len(data)

    # -- worker side -------------------------------------------------------------------

    def unread(self) -> bool:
        """Whether any spooled webhook waits to be moved into the inbox."""
        with self._lock:
            return any(s.read < s.size for s in self._segments)

    def read(self, limit: int) -> tuple[list[Received], SpoolCursor | None]:
        """Up to ``limit`` of the oldest spooled webhooks not yet moved, and where they end
        (blocking: run it off the event loop)."""
        with self._lock:
            segment = next((s for s in self._segments if s.read < s.size), None)
        if segment is None:
            return [], None
        records: list[Received] = []
        end = segment.read
        for record, end in self._records(segment):  # noqa: B007 (the offset after the last)
            if record is not None:
                records.append(record)
            if len(records) >= limit:
                break
        return records, SpoolCursor(segment.seq, end)

    def consumed(self, cursor: SpoolCursor) -> None:
        """The records up to ``cursor`` are committed to the inbox: forget them."""
        with self._lock:
            for segment in self._segments:
                if segment.seq == cursor.seq:
                    segment.read = max(segment.read, cursor.offset)
                    self._full = False
                    self._drop_if_moved(segment)
                    break

    def _drop_if_moved(self, segment: _Segment) -> None:
        """Delete a segment no longer written whose records are all in the inbox (under the
        lock)."""
        if segment.closed and segment.read >= segment.size:
            try:
                if segment.damaged_at:  # kept for a person to look at
                    quarantine = self.directory / QUARANTINE
                    quarantine.mkdir(exist_ok=True)
                    segment.path.rename(quarantine / segment.path.name)
                    logger.error(
                        "damaged spool segment kept aside",
                        path=str(quarantine / segment.path.name),
                    )
                else:
                    segment.path.unlink(missing_ok=True)
            except OSError as e:  # retried when the next read of it is committed
                logger.warning("spool segment not deleted", path=str(segment.path), error=str(e))
                return
            self._segments.remove(segment)

    def _records(self, segment: _Segment) -> Iterator[tuple[Received | None, int]]:
        """Each whole record of ``segment`` from where its reading stopped, with the offset
        after it (``None`` for one that cannot be decoded). Damage is skipped: reading goes
        on at the next whole record (see the module's note)."""
        offset = segment.read
        end = segment.size  # only what was completely written: the writer may be appending
        with segment.path.open("rb") as f:
            f.seek(offset)
            while offset < end:
                head = f.read(_HEAD.size)
                rest = b""
                whole = len(head) == _HEAD.size
                if whole:
                    length, crc = _HEAD.unpack(head)
                    whole = _FIXED.size <= length <= end - offset - _HEAD.size
                    if whole:
                        rest = f.read(length)
                        whole = zlib.crc32(rest) == crc
                if not whole:
                    f.seek(offset)
                    after = _resynchronise(f.read(end - offset))
                    self._damaged(segment, offset, None if after is None else offset + after)
                    if after is None:
                        yield None, segment.size  # a torn tail is cut off: size is less
                        return
                    offset += after
                    f.seek(offset)
                    continue
                offset += _HEAD.size + length
                try:
                    record = _decode(rest)
                except (struct.error, UnicodeDecodeError):
                    self._damaged(segment, offset - _HEAD.size - length, offset)
                    record = None
                yield (record if record is None or record[0] else None), offset  # probes skipped

    def _damaged(self, segment: _Segment, start: int, resumed: int | None) -> None:
        """Report damage found in ``segment`` at ``start`` (once); ``resumed``: where whole
        records begin again (``None``: none until the end)."""
        if start in segment.damaged_at:
            return
        if resumed is None and segment.newest_of_last_run:
            logger.warning(
                "spool record cut short by a crash while it was written (never acknowledged);"
                " dropped",
                path=str(segment.path),
                offset=start,
                bytes=segment.size - start,
            )
            # Cut it off, so that a later start (when this is no longer the newest segment)
            # does not take it for damage.
            os.truncate(segment.path, start)
            segment.size = start
            return
        segment.damaged_at.add(start)
        logger.error(
            "damaged spool record: acknowledged webhooks in it are lost; the segment will be"
            " kept in quarantine",
            path=str(segment.path),
            offset=start,
            skipped_bytes=(segment.size if resumed is None else resumed) - start,
        )
        self._on_damage()


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(None)


def _resynchronise(data: bytes) -> int | None:
    """Where the first whole record after the damaged one at the start of ``data`` begins: the
    first later offset whose length fits and whose checksum holds (``None``: there is none)."""
    size = len(data)
    for at in range(1, size - _HEAD.size - _FIXED.size + 1):
        length, crc = _HEAD.unpack_from(data, at)
        if not _FIXED.size <= length <= size - at - _HEAD.size:
            continue  # most offsets inside a record stop here: its bytes are text
        start = at + _HEAD.size
        if zlib.crc32(data[start : start + length]) == crc:
            return at
    return None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RecentKeys:
    """The dedup keys of the newest spooled webhooks, to answer a resend at once.

    Two generations of sets: a key is remembered for at least ``capacity / 2`` and at most
    ``capacity`` later keys. Exact for what it remembers (the full digest is kept); a resend
    older than that is answered as new and recognised when it is moved into the inbox.
    """

    def __init__(self, capacity: int) -> None:
        self._half = max(1, capacity // 2) if capacity > 0 else 0
        self._current: set[str] = set()
        self._previous: set[str] = set()

    def __contains__(self, key: str) -> bool:
        if key in self._current:
            return True
        if key in self._previous:
            self.add(key)  # refreshed: still resent
            return True
        return False

    def add(self, key: str) -> None:
        if not self._half:
            return
        self._current.add(key)
        if len(self._current) >= self._half:
            self._previous = self._current
            self._current = set()

    def __len__(self) -> int:
        return len(self._current | self._previous)
