"""A real PostgreSQL for tests: one server per pytest-xdist worker, a fresh database per test.

The server is ours (ops/postgres.py: Debian's binaries, a temporary data dir, a free port), tuned
for throw-away data (no fsync).  A fresh database is a copy of a template migrated once, which
takes a few tens of milliseconds; it is dropped after the test.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from evcharging.adapters.db.postgres_repository import PostgresRepository
from evcharging.ops import postgres
from tests.support.ports import free_port

TEMPLATE = "evcharging_template"
# Throw-away data: durability off makes CREATE DATABASE and every commit much cheaper.
TEST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def binaries_missing() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    try:
        postgres.find_bin_dir()
    except postgres.PostgresError as exc:
        return str(exc)
    return None


def scratch_dir(prefix: str) -> Path:
    """A data dir the server may own: under the system temp dir, whose parents everyone may
    enter (pytest's own tmp_path is private to root, and the server runs as `postgres`)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


@contextmanager
def running_postgres(prefix: str = "evcharging-pg-") -> Iterator[postgres.ServerConfig]:
    data_dir = scratch_dir(prefix)
    cfg = postgres.ServerConfig(data_dir=data_dir, port=free_port(), settings=TEST_SETTINGS)
    try:
        postgres.start(cfg)
        try:
            yield cfg
        finally:
            postgres.stop(cfg)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def url_of(cfg: postgres.ServerConfig, database: str) -> str:
    return f"postgresql://{postgres.SERVICE_USER}@{cfg.client_host}:{cfg.port}/{database}"


class Databases:
    """Fresh databases on one server: `fresh()` (migrated) and `empty()` (not migrated)."""

    def __init__(self, cfg: postgres.ServerConfig) -> None:
        self.cfg = cfg
        self._admin = psycopg.connect(url_of(cfg, "postgres"), autocommit=True)
        self._names = (f"t{n}" for n in itertools.count(1))
        self._create(TEMPLATE, template="template0")
        PostgresRepository(url_of(cfg, TEMPLATE)).close()

    def _create(self, name: str, template: str) -> str:
        self._admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
        return url_of(self.cfg, name)

    def fresh(self) -> str:
        """The URL of a new database at the latest schema version."""
        return self._create(next(self._names), TEMPLATE)

    def empty(self) -> str:
        """The URL of a new database without any table."""
        return self._create(next(self._names), "template0")

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self._admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def close(self) -> None:
        self._admin.close()


@contextmanager
def databases() -> Iterator[Databases]:
    with running_postgres() as cfg:
        dbs = Databases(cfg)
        try:
            yield dbs
        finally:
            dbs.close()
