"""The store: durable state behind one typed interface, SQLite by default, PostgreSQL shared.

``Store(settings)`` opens the backend ``store.backend`` names (``receiver.store.base``); the
domain's SQL lives in this package's modules, written once for both backends, one per thing
stored: ``inbox``, ``incidents``, ``outbox``, ``journal``, ``evidence``, ``audit``,
``runtime_switches``, ``approvals``, ``retention``, ``ui`` (what the pages read) and
``integrity`` (whether what is stored still makes sense). No module outside this package runs
SQL (import-linter and ``tests/test_layers.py`` check it).
"""

from receiver.store.base import (
    Connection,
    Cursor,
    Row,
    Store,
    StoreNotReadable,
    StoreUnavailable,
    now,
)
from receiver.store.integrity import check_integrity
from receiver.store.sqlite import MIGRATIONS

__all__ = [
    "MIGRATIONS",
    "Connection",
    "Cursor",
    "Row",
    "Store",
    "StoreNotReadable",
    "StoreUnavailable",
    "check_integrity",
    "now",
]
