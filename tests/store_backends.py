"""One ``store`` fixture over both backends: the store's behaviour is the same on each.

``store`` is parametrized ``sqlite`` | ``postgres``: a fresh SQLite file in the test's
directory, or a fresh database of the session's throwaway PostgreSQL cluster
(``tests.postgres``: skipped without the server, a failure in CI). A test module uses it by
importing it (``from tests.store_backends import store_of_each_backend``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from receiver.config import StoreSettings
from receiver.store import Store
from tests.postgres import postgres_cluster, postgres_dsn

__all__ = [
    "BACKENDS",
    "postgres_cluster",
    "postgres_dsn",
    "store_of_each_backend",
    "store_settings",
]

BACKENDS = ("sqlite", "postgres")


def store_settings(backend: str, tmp_path: Path, dsn: str | None = None) -> StoreSettings:
    """Settings of a store of ``backend``; ``dsn`` for PostgreSQL."""
    if backend == "postgres":
        return StoreSettings.model_validate(
            {
                "backend": "postgres",
                "path": tmp_path / "state" / "receiver.sqlite3",
                "postgres": {"dsn": {"value": dsn}, "pool_size": 4},
            }
        )
    return StoreSettings(path=tmp_path / "state" / "receiver.sqlite3")


@pytest_asyncio.fixture(params=BACKENDS, name="store")
async def store_of_each_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Store]:
    """A fresh, open store of each backend."""
    backend: str = request.param
    dsn = request.getfixturevalue("postgres_dsn") if backend == "postgres" else None
    opened = Store(store_settings(backend, tmp_path, dsn))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
