"""Versioned schema migrations: numbered SQL files applied in order, tracked by PRAGMA user_version."""

from __future__ import annotations

import logging
import sqlite3
from importlib import resources

log = logging.getLogger(__name__)


def available() -> list[tuple[int, str]]:
    """(version, sql) of every migration shipped in the package, in order."""
    folder = resources.files("evcharging.adapters.db") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    return sorted(found)


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
