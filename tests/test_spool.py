"""The intake spool and its writer: durable appends, moves into the inbox, crash recovery."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from pydantic import ValidationError
from structlog.testing import capture_logs

from receiver.alertmanager import WebhookPayload
from receiver.config import StoreSettings
from receiver.spool import RecentKeys, Spool, SpoolUnavailable, spool_directory
from receiver.store import Store, StoreUnavailable
from receiver.store.inbox import enqueue_webhooks, inbox_size, recent_dedup_keys
from receiver.webhook import SpoolWriter
from tests.helpers import alert, notification

MIB = 1024 * 1024


def _spool(directory: Path, **kwargs: int) -> Spool:
    spool = Spool(
        directory,
        sync=False,
        segment_bytes=kwargs.get("segment_bytes", MIB),
        max_bytes=kwargs.get("max_bytes", 8 * MIB),
    )
    spool.open()
    return spool


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    spool = _spool(tmp_path / "spool")
    try:
        yield spool
    finally:
        spool.close()


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(StoreSettings(path=tmp_path / "s.sqlite3", busy_timeout_seconds=0.05))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def _records(n: int, *, start: int = 0, size: int = 100) -> list[tuple[str, str, bytes]]:
    return [(f"k{i}", f"group-{i % 3}", b"{" + b"x" * size + b"}") for i in range(start, start + n)]


def _drain(spool: Spool, limit: int = 1000) -> list[tuple[str, str, bytes]]:
    """Read everything unread, marking it consumed, as the worker does after each commit."""
    out: list[tuple[str, str, bytes]] = []
    while spool.unread():
        records, cursor = spool.read(limit)
        out.extend(r[:3] for r in records)
        assert cursor is not None
        spool.consumed(cursor)
    return out


async def _keys(store: Store) -> list[str]:
    return await store.read(lambda c: recent_dedup_keys(c, limit=inbox_size(c)))


def test_the_spool_sits_beside_the_database(tmp_path: Path) -> None:
    settings = StoreSettings(path=tmp_path / "state" / "receiver.sqlite3")
    assert spool_directory(settings) == tmp_path / "state" / "receiver.sqlite3.spool"


@pytest.mark.asyncio
async def test_records_come_back_in_order_with_their_receipt_time(spool: Spool) -> None:
    first, second = _records(3), _records(2, start=3)
    await spool.append(first)
    await spool.append(second)
    records, cursor = spool.read(10)
    assert [r[:3] for r in records] == first + second
    assert all(r[3] > 1.7e9 for r in records)  # Unix seconds
    assert spool.pending_bytes > 0
    assert cursor is not None
    spool.consumed(cursor)
    assert not spool.unread()
    assert spool.pending_bytes == 0


@pytest.mark.asyncio
async def test_reads_are_bounded_and_resume_where_they_ended(spool: Spool) -> None:
    await spool.append(_records(10))
    records, cursor = spool.read(4)
    assert [r[0] for r in records] == ["k0", "k1", "k2", "k3"]
    # Not consumed (the inbox commit failed): the same records are read again.
    again, _ = spool.read(4)
    assert [r[0] for r in again] == ["k0", "k1", "k2", "k3"]
    assert cursor is not None
    spool.consumed(cursor)
    assert [r[0] for r in _drain(spool)] == [f"k{i}" for i in range(4, 10)]


@pytest.mark.asyncio
async def test_segments_rotate_and_are_deleted_once_moved(tmp_path: Path) -> None:
    spool = _spool(tmp_path / "spool", segment_bytes=4096)
    try:
        for n in range(10):
            await spool.append(_records(3, start=n * 3, size=500))
        segments = sorted(p.name for p in spool.directory.iterdir())
        assert len(segments) >= 4
        assert [r[0] for r in _drain(spool, limit=7)] == [f"k{i}" for i in range(30)]
        # Only the segment being written is left, and it goes at the next write.
        left = list(spool.directory.iterdir())
        assert len(left) == 1
        await spool.append(_records(1, start=30))
        assert left[0] not in list(spool.directory.iterdir())
        assert [r[0] for r in _drain(spool)] == ["k30"]
    finally:
        spool.close()


@pytest.mark.asyncio
async def test_what_was_not_moved_is_found_after_a_restart(tmp_path: Path) -> None:
    """Records not yet moved are read again after a restart (new process, same directory),
    before anything written after it; their keys are reported for recognising resends."""
    directory = tmp_path / "spool"
    spool = _spool(directory)
    await spool.append(_records(5))
    _, cursor = spool.read(2)
    assert cursor is not None
    spool.consumed(cursor)
    spool.close()

    again = Spool(directory, sync=False, segment_bytes=MIB, max_bytes=8 * MIB)
    keys = again.open()
    try:
        # The whole first segment: a consumed offset is not kept across restarts, the inbox
        # recognises the two already moved as repeats.
        assert keys == [f"k{i}" for i in range(5)]
        await again.append(_records(1, start=5))
        assert [r[0] for r in _drain(again)] == [f"k{i}" for i in range(6)]
        assert len(list(directory.iterdir())) == 1
    finally:
        again.close()


@pytest.mark.asyncio
async def test_closing_deletes_what_is_all_in_the_inbox_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    """At close, the segment being written is deleted if every record in it was moved, so a
    restart does not read it again; one with records still to move is kept."""
    moved = _spool(tmp_path / "moved")
    await moved.append(_records(3))
    _drain(moved)
    moved.close()
    assert list(moved.directory.iterdir()) == []

    waiting = _spool(tmp_path / "waiting")
    await waiting.append(_records(3))
    waiting.close()
    again = Spool(waiting.directory, sync=False, segment_bytes=MIB, max_bytes=8 * MIB)
    try:
        assert again.open() == ["k0", "k1", "k2"]
    finally:
        again.close()


@pytest.mark.asyncio
async def test_an_empty_segment_left_by_a_crash_is_removed(tmp_path: Path) -> None:
    """A segment started just before a crash, with nothing in it, is not kept for ever."""
    directory = tmp_path / "spool"
    directory.mkdir()
    (directory / "00000003.seg").touch()
    spool = _spool(directory)
    try:
        assert not (directory / "00000003.seg").exists()
        assert not spool.unread()
        await spool.append(_records(1))
        assert [r[0] for r in _drain(spool)] == ["k0"]
    finally:
        spool.close()


@pytest.mark.asyncio
async def test_a_record_cut_short_at_the_end_of_the_newest_segment_is_dropped(
    tmp_path: Path,
) -> None:
    """A torn tail of the newest segment (never acknowledged) is cut off with a warning, not
    counted as a loss; everything before it is read and the segment is deleted once moved."""
    directory = tmp_path / "spool"
    spool = _spool(directory)
    await spool.append(_records(3))
    spool.close()
    (segment,) = directory.iterdir()
    whole = segment.read_bytes()
    segment.write_bytes(whole + whole[:50])  # half a header and record, as a crash leaves it

    damage: list[None] = []
    again = Spool(
        directory,
        sync=False,
        segment_bytes=MIB,
        max_bytes=8 * MIB,
        on_damage=lambda: damage.append(None),
    )
    with capture_logs() as logs:
        keys = again.open()
    try:
        assert keys == ["k0", "k1", "k2"]
        assert segment.read_bytes() == whole  # the tear is cut off at once
        assert [r[0] for r in _drain(again)] == ["k0", "k1", "k2"]
        assert not segment.exists()
        assert not (directory / "quarantine").exists()
        assert damage == []
        assert not [e for e in logs if e["log_level"] == "error"]
    finally:
        again.close()


@pytest.mark.asyncio
async def test_a_damaged_record_in_the_middle_loses_only_itself(tmp_path: Path) -> None:
    """One flipped byte in the middle of a segment loses that record alone: every other
    acknowledged webhook, before and after it, is moved; the loss is an ERROR and counted
    once; the segment is kept in quarantine, not deleted."""
    directory = tmp_path / "spool"
    spool = _spool(directory)
    for start in range(0, 208, 8):  # many writes, as many requests make them
        await spool.append(_records(8, start=start))
    spool.close()
    (segment,) = directory.iterdir()
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x01
    segment.write_bytes(bytes(data))

    damage: list[None] = []
    again = Spool(
        directory,
        sync=False,
        segment_bytes=MIB,
        max_bytes=8 * MIB,
        on_damage=lambda: damage.append(None),
    )
    with capture_logs() as logs:
        keys = again.open()
        moved = [r[0] for r in _drain(again, limit=50)]
    try:
        assert len(keys) == 207
        assert moved == keys
        lost = {f"k{i}" for i in range(208)} - set(moved)
        assert len(lost) == 1
        assert damage == [None]  # found while opening, not again while moving
        errors = [e for e in logs if e["log_level"] == "error"]
        assert any("damaged spool record" in e["event"] for e in errors)
        assert not segment.exists()
        assert (directory / "quarantine" / segment.name).read_bytes() == bytes(data)
    finally:
        again.close()


@pytest.mark.asyncio
async def test_a_torn_end_of_an_older_segment_is_a_loss(tmp_path: Path) -> None:
    """Only the newest segment can end in a write a crash cut short; a damaged end of an older
    one held acknowledged webhooks: counted, quarantined, and the later segments still read."""
    directory = tmp_path / "spool"
    spool = _spool(directory)
    await spool.append(_records(3))
    spool.close()
    (first,) = directory.iterdir()
    whole = first.read_bytes()
    first.write_bytes(whole[:-1] + bytes([whole[-1] ^ 0xFF]))  # last record's crc fails
    (directory / "00000009.seg").write_bytes(whole)

    damage: list[None] = []
    again = Spool(
        directory,
        sync=False,
        segment_bytes=MIB,
        max_bytes=8 * MIB,
        on_damage=lambda: damage.append(None),
    )
    keys = again.open()
    try:
        assert keys == ["k0", "k1", "k0", "k1", "k2"]
        assert [r[0] for r in _drain(again)] == keys
        assert damage == [None]
        assert (directory / "quarantine" / first.name).exists()
        assert not (directory / "00000009.seg").exists()
    finally:
        again.close()


@pytest.mark.asyncio
async def test_a_full_spool_refuses_until_something_is_moved(tmp_path: Path) -> None:
    spool = _spool(tmp_path / "spool", max_bytes=4096, segment_bytes=2048)
    try:
        await spool.append(_records(2, size=1500))
        assert spool.accepting
        with pytest.raises(SpoolUnavailable, match="spool full"):
            await spool.append(_records(1, start=2, size=1500))
        assert not spool.accepting
        _, cursor = spool.read(1)
        assert cursor is not None
        spool.consumed(cursor)
        assert spool.accepting
        await spool.append(_records(1, start=2, size=1500))
        assert [r[0] for r in _drain(spool)] == ["k1", "k2"]
    finally:
        spool.close()


@pytest.mark.asyncio
async def test_a_closed_spool_is_unavailable(tmp_path: Path) -> None:
    spool = _spool(tmp_path / "spool")
    spool.close()
    assert not spool.accepting
    with pytest.raises(SpoolUnavailable):
        await spool.append(_records(1))


_DISK_REFUSES = textwrap.dedent(
    """
    import asyncio, resource, signal, sys
    from pathlib import Path
    from receiver.spool import Spool, SpoolUnavailable

    async def main() -> None:
        spool = Spool(Path(sys.argv[1]), sync=True, segment_bytes=1 << 20, max_bytes=1 << 24)
        spool.open()
        record = [("k", "g", b"x" * 3000)]
        written = 0
        for _ in range(20):
            try:
                await spool.append(record)
            except SpoolUnavailable as e:
                print("refused", written, e)
                break
            written += 1
        spool.close()
        again = Spool(Path(sys.argv[1]), sync=False, segment_bytes=1 << 20, max_bytes=1 << 24)
        print("read", len(again.open()))
        again.close()

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))
    asyncio.run(main())
    """
)


def test_a_write_the_disk_refuses_is_unavailable_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    """The operating system refuses to grow the file past 10,000 bytes (as a full disk would):
    the append fails with SpoolUnavailable, the file keeps only whole records, and every
    record acknowledged before is read back."""
    result = subprocess.run(
        [sys.executable, "-c", _DISK_REFUSES, str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(("refused", "read"))]
    assert lines[0].startswith("refused 3 spool write failed")
    assert lines[1] == "read 3"
    (segment,) = (tmp_path / "spool").iterdir()
    assert segment.stat().st_size < 10_000


@pytest.mark.asyncio
async def test_enqueue_webhooks_tells_new_from_repeated_news(store: Store) -> None:
    """Keys stored before, or earlier in the same call, are duplicates; the rest are stored."""
    assert await store.write(lambda c: enqueue_webhooks(c, [("old", "g", b"{}")])) == [True]
    # More than one INSERT statement's worth, with repeats inside and across the chunks.
    batch = [(f"k{i % 300}", "g", b"{}") for i in range(450)] + [("old", "g", b"{}")]
    results = await store.write(lambda c: enqueue_webhooks(c, batch))
    assert results == [True] * 300 + [False] * 150 + [False]
    assert await _keys(store) == ["old", *(f"k{i}" for i in range(300))]


def _body(n: int) -> bytes:
    """A valid notification, distinct news for each ``n``."""
    return json.dumps(notification([alert(f"fp-{n}")], group_key=f'{{}}:{{n="{n}"}}')).encode()


@pytest.mark.asyncio
async def test_webhooks_arriving_together_share_one_spool_write(spool: Spool) -> None:
    """Fifty webhooks received at once are all spooled, in far fewer writes than fifty; a
    resend in the same batch, or of an earlier write, is a duplicate and not written; a body
    that is not a notification is refused without holding up the others."""
    writer = SpoolWriter(spool, RecentKeys(1000))
    results = await asyncio.gather(
        *(writer.receive(_body(i)) for i in range(50)),
        writer.receive(_body(7)),
        writer.receive(b'{"version": "3"}'),
        return_exceptions=True,
    )
    assert [r[1] for r in results[:51] if isinstance(r, tuple)] == [True] * 50 + [False]
    assert isinstance(results[51], ValidationError)
    assert 1 <= spool.writes < 10
    payload, stored = await writer.receive(_body(3))
    assert (payload.group_key, stored) == ('{}:{n="3"}', False)
    spooled = _drain(spool)
    assert sorted(r[1] for r in spooled) == sorted(f'{{}}:{{n="{i}"}}' for i in range(50))
    assert all(r[0] == WebhookPayload.model_validate_json(r[2]).dedup_key() for r in spooled)


@pytest.mark.asyncio
async def test_large_bodies_waiting_together_are_all_answered(spool: Spool) -> None:
    """Bodies of several MiB together are validated in parts (the writer lets other tasks run
    between them) and all spooled."""
    writer = SpoolWriter(spool, RecentKeys(1000))
    filler = {f"f{n}": "x" * 16_000 for n in range(40)}  # 640 KB, each value within limits
    bodies = [
        json.dumps(
            notification([alert(f"big-{i}", annotations=filler)], group_key=f"big-{i}")
        ).encode()
        for i in range(5)
    ]
    results = await asyncio.gather(*(writer.receive(b) for b in bodies))
    assert [stored for _, stored in results] == [True] * 5
    assert sorted(r[1] for r in _drain(spool)) == [f"big-{i}" for i in range(5)]


@pytest.mark.asyncio
async def test_a_batch_that_cannot_be_written_is_unavailable_and_the_retry_is_new(
    tmp_path: Path,
) -> None:
    """Every webhook of a refused write gets StoreUnavailable (503) and is not remembered:
    once the spool has room the same webhooks are written, not taken for duplicates."""
    spool = _spool(tmp_path / "spool", max_bytes=3000)
    writer = SpoolWriter(spool, RecentKeys(1000))
    try:
        refused = await asyncio.gather(
            *(writer.receive(_body(i)) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, StoreUnavailable) for r in refused)
        assert not spool.unread()
        retried = [(await writer.receive(_body(i)))[1] for i in range(2)]
        assert retried == [True, True]
    finally:
        spool.close()


@pytest.mark.asyncio
async def test_a_request_that_goes_away_does_not_disturb_the_others(spool: Spool) -> None:
    """A cancelled wait is skipped when the batch settles; its webhook is still spooled and the
    others get their answers."""
    writer = SpoolWriter(spool, RecentKeys(1000))
    tasks = [asyncio.create_task(writer.receive(_body(i))) for i in range(10)]
    await asyncio.sleep(0)  # every task has queued its webhook
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert [r[1] for i, r in enumerate(results) if i != 3] == [True] * 9
    assert len(_drain(spool)) == 10


def test_recent_keys_remember_at_least_half_their_capacity() -> None:
    recent = RecentKeys(100)
    for i in range(100):
        recent.add(f"k{i}")
    assert all(f"k{i}" in recent for i in range(50, 100))
    assert "k0" not in recent
    recent.add("k100")
    assert "k50" in recent  # looked up: refreshed into the newer generation
    for i in range(101, 150):
        recent.add(f"k{i}")
    assert "k50" in recent
    assert "k51" not in recent
    off = RecentKeys(0)
    off.add("k")
    assert "k" not in off
