"""The database adapters: one Repository in SQL over SQLite or PostgreSQL, chosen by `--db`."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from evcharging.adapters.db.sql_repository import SqlRepository

_POSTGRES_SCHEMES = ("postgresql", "postgres")


class CannotOpenDatabase(RuntimeError):
    """The database named by `--db` could not be opened or migrated; the message says why (a
    refused connection, a wrong password, a folder that cannot be written), without the URL."""


def sqlite_path(db: str) -> str | None:
    """The SQLite file `db` names (a plain path or sqlite:///path), None if it names none."""
    if db.startswith("sqlite:///"):
        return db.removeprefix("sqlite:///") or None
    if "://" in db:
        return None
    return db or None


def open_repository(db: str) -> SqlRepository:
    """The Repository for `db`, migrated: a path, `:memory:` or `sqlite:///path` (three slashes,
    then the path: sqlite:////abs/file.db) is SQLite; `postgresql://...` or `postgres://...` is
    PostgreSQL.  Anything else is a ValueError saying what is accepted (never echoing the URL,
    which may hold a password); a database that cannot be opened is CannotOpenDatabase."""
    scheme = urlsplit(db).scheme.lower() if "://" in db else ""
    if scheme in _POSTGRES_SCHEMES:
        import psycopg

        from evcharging.adapters.db.postgres_repository import PostgresRepository

        try:
            return PostgresRepository(db)
        except psycopg.Error as exc:
            raise CannotOpenDatabase("PostgreSQL: " + " ".join(str(exc).split())) from exc
    path = sqlite_path(db)
    if path is None:
        what = f"the scheme {scheme!r}" if scheme and scheme != "sqlite" else "it"
        raise ValueError(
            f"unsupported database ({what}): give a file path, sqlite:///PATH "
            "or postgresql://USER@HOST:PORT/DBNAME"
        )
    import sqlite3

    from evcharging.adapters.db.sqlite_repository import SqliteRepository

    try:
        return SqliteRepository(path)
    except (sqlite3.Error, OSError) as exc:
        raise CannotOpenDatabase(f"SQLite file {path}: {exc}") from exc
