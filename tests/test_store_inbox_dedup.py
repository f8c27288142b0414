"""The store's inbox: repeats are found by a 63-bit integer and confirmed by the full digest."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from receiver.config import StoreSettings
from receiver.store import MIGRATIONS, Store
from receiver.store.inbox import dedup_hash, enqueue_webhooks


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_dedup_hash_is_the_digests_first_63_bits() -> None:
    """A hex digest's integer is its first 16 hex digits with the top bit cleared."""
    assert dedup_hash("f" * 64) == (1 << 63) - 1
    assert dedup_hash("0123456789abcdef" + "0" * 48) == 0x0123456789ABCDEF
    assert dedup_hash("k7") == dedup_hash(_digest("k7"))


@pytest.mark.asyncio
async def test_a_colliding_integer_does_not_make_a_different_notification_a_repeat(
    tmp_path: Path,
) -> None:
    """Two digests sharing their first 16 hex digits are both stored; each is a repeat of itself."""
    first = "a" * 16 + "0" * 48
    second = "a" * 16 + "1" * 48
    assert dedup_hash(first) == dedup_hash(second)
    store = Store(StoreSettings(path=tmp_path / "s.sqlite3"))
    await store.open()
    try:
        stored = await store.write(lambda c: enqueue_webhooks(c, [(first, "g", b"{}")]))
        again = await store.write(
            lambda c: enqueue_webhooks(c, [(second, "g", b"{}"), (first, "g", b"{}")])
        )
        rows = await store.read(lambda c: c.execute("SELECT count(*) FROM inbox").fetchone()[0])
    finally:
        await store.close()
    assert stored == [True]
    assert again == [True, False]
    assert rows == 2


@pytest.mark.asyncio
async def test_rows_stored_before_the_migration_are_still_recognised(tmp_path: Path) -> None:
    """A notification stored under the old schema is a repeat after the upgrade; rows keep ids."""
    path = tmp_path / "s.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:4], start=1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
    old = [_digest(f"n{i}") for i in range(50)] + ["f" * 64]
    for i, key in enumerate(old, start=10):
        conn.execute(
            "INSERT INTO inbox (id, dedup_key, group_key, received_at, payload, state)"
            " VALUES (?, ?, 'g', 0, x'7b7d', 'pending')",
            (i, key),
        )
    conn.close()
    store = Store(StoreSettings(path=path))
    await store.open()
    try:
        hashes = await store.read(
            lambda c: {
                r[0]: (r[1], r[2]) for r in c.execute("SELECT dedup_key, dedup_hash, id FROM inbox")
            }
        )
        result = await store.write(
            lambda c: enqueue_webhooks(c, [(k, "g", b"{}") for k in [*old, _digest("new")]])
        )
    finally:
        await store.close()
    assert {key: h for key, (h, _) in hashes.items()} == {key: dedup_hash(key) for key in old}
    assert sorted(i for _, i in hashes.values()) == list(range(10, 10 + len(old)))
    assert result == [False] * len(old) + [True]
