"""Versioned schema migrations: numbered SQL files applied in order, tracked by PRAGMA user_version."""

from __future__ import annotations

import logging
import sqlite3
from importlib import resources

log = logging.getLogger(__name__)


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
    """Apply what is missing, each migration in its own transaction; returns the schema version."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for version, sql in available():
        if version <= current:
            continue
        log.info("applying migration %04d", version)
        try:
            conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;")
        except sqlite3.Error:
            conn.rollback()
            raise
        current = version
    return int(current)
