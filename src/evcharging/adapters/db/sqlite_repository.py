"""The Repository port over an embedded SQLite file (or :memory: for unit tests)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from evcharging.adapters.db.migrations import migrate
from evcharging.adapters.db.sql_repository import Dialect, SqlRepository

SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    begin="BEGIN IMMEDIATE",  # take the write lock at once: no deadlock upgrading a read lock
    for_update="",  # BEGIN IMMEDIATE already keeps every other writer out
    lock_changes=None,
    integrity_error=sqlite3.IntegrityError,
)


class SqliteRepository(SqlRepository):
    """SQLite: WAL mode for a file, foreign keys on, migrated on open."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 5000")
        if str(path) != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        super().__init__(conn, SQLITE)
        self.schema_version = migrate(conn)
