"""The Repository port over PostgreSQL (psycopg 3), for a database two hosts share.

One synchronous connection in autocommit mode with explicit transactions, as on SQLite (see
sql_repository.py for why, and what it costs).  Migrated on open; safe when Central and the
Registry open the same fresh database at the same moment (migrations.migrate_postgres).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from evcharging.adapters.db.migrations import migrate_postgres
from evcharging.adapters.db.sql_repository import Dialect, SqlRepository

POSTGRESQL = Dialect(
    name="postgresql",
    placeholder="%s",
    begin="BEGIN",  # READ COMMITTED; the rows a use case changes are locked by its statements
    for_update=" FOR UPDATE",  # a read-then-write (amend_energy) waits for a concurrent one
    lock_changes="LOCK TABLE registry_changes IN EXCLUSIVE MODE",  # readers are not blocked
    integrity_error=psycopg.IntegrityError,
)


class PostgresRepository(SqlRepository):
    """PostgreSQL at `url` (postgresql://user@host:port/dbname; a password via PGPASSFILE)."""

    def __init__(self, url: str) -> None:
        conn = self._connect(url)
        super().__init__(conn, POSTGRESQL, reopen=lambda: self._connect(url))
        try:
            self.schema_version = migrate_postgres(conn)
        except BaseException:
            conn.close()
            raise

    @staticmethod
    def _connect(url: str) -> psycopg.Connection[dict[str, Any]]:
        return psycopg.connect(url, autocommit=True, row_factory=dict_row)
