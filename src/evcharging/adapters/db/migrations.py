"""Versioned schema migrations: numbered SQL files applied in order, each in its own transaction.

SQLite tracks the version in PRAGMA user_version (as it always has: existing files keep working).
PostgreSQL tracks it in a `schema_version` table, one row per applied migration, and takes a
transaction-scoped advisory lock first: Central and the Registry may start at the same moment on
one database, and the second simply finds the work done.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from importlib import resources
from typing import Any

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key: any constant of ours ("evcharging" in ASCII, truncated to 63 bits).
_PG_LOCK_KEY = 0x65_76_63_68_61_72_67_69


def available(dialect: str = "sqlite") -> list[tuple[int, str]]:
    """(version, sql) of every migration shipped in the package, in order.

    `NNNN_name.sql` is portable SQL, run on every database; `NNNN_name.<dialect>.sql`, when there
    is one, is appended to it for that database only (e.g. a trigger's syntax)."""
    folder = resources.files("evcharging.adapters.db") / "migrations"
    shared: dict[int, str] = {}
    own: dict[int, str] = {}
    for entry in folder.iterdir():
        name = entry.name
        if not (name.endswith(".sql") and name[:4].isdigit()):
            continue
        parts = name.split(".")
        if len(parts) == 2:
            shared[int(name[:4])] = entry.read_text(encoding="utf-8")
        elif len(parts) == 3 and parts[1] == dialect:
            own[int(name[:4])] = entry.read_text(encoding="utf-8")
    return [(v, shared[v] + ("\n" + own[v] if v in own else "")) for v in sorted(shared)]


def migrate(conn: sqlite3.Connection) -> int:
    """Apply what is missing, each migration in its own transaction; returns the schema version.

    Safe when two programs open a new file at once (Central and the Registry share it): each
    migration runs under BEGIN IMMEDIATE (one writer at a time) and the version is read again
    inside it, so the second program finds the work done instead of failing on CREATE TABLE."""
    current = 0
    for version, sql in available("sqlite"):
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > current:
                log.info("applying migration %04d", version)
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")
                current = version
        except sqlite3.Error:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return int(current or conn.execute("PRAGMA user_version").fetchone()[0])


def _statements(sql: str) -> list[str]:
    """A script split into whole statements (a trigger's body keeps its inner semicolons)."""
    found, pending = [], ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending)
            pending = ""
    if pending.strip() and sqlite3.complete_statement(pending + ";"):
        found.append(pending)
    return found


def migrate_postgres(conn: Any) -> int:
    """The same on PostgreSQL (`conn`: a psycopg connection in autocommit mode).

    Each migration runs in its own transaction that first takes the advisory lock and re-reads
    the version under it, so concurrent starts apply every migration exactly once."""
    current = 0
    for version, sql in available("postgresql"):
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            row = conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
            current = int(row.fetchone()["v"])
            if version > current:
                log.info("applying migration %04d", version)
                conn.execute(sql)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)",
                    (version, datetime.now(UTC).isoformat()),
                )
                current = version
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return current
