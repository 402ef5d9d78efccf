"""A real PostgreSQL for tests: one server per pytest-xdist worker, a fresh database per test.

The server is ours (ops/postgres.py: Debian's binaries, a temporary data dir, a free port), tuned
for throw-away data (no fsync).  Each test gets a fresh schema (see `Databases`), dropped after.
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

from evcharging.ops import postgres
from tests.support.ports import free_port

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


def url_of(cfg: postgres.ServerConfig, database: str, schema: str | None = None) -> str:
    url = f"postgresql://{postgres.SERVICE_USER}@{cfg.client_host}:{cfg.port}/{database}"
    return url if schema is None else f"{url}?options=-csearch_path%3D{schema}"


class Databases:
    """Fresh, empty databases on one server, each a schema of its own (`fresh()`).

    A schema, not a database: on a new cluster CREATE DATABASE copies ~8 MB and takes 0.3 s
    until the WAL has warmed up, while a schema plus the migrations takes a few tens of ms.  The
    URL sets the search_path, so the repository (and its migrations) see only that schema."""

    def __init__(self, cfg: postgres.ServerConfig) -> None:
        self.cfg = cfg
        self._admin = psycopg.connect(url_of(cfg, cfg.database), autocommit=True)
        self._names = (f"t{n}" for n in itertools.count(1))

    def fresh(self) -> str:
        """The URL of a new, empty schema (the repository migrates it when it opens it)."""
        name = next(self._names)
        self._admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        return url_of(self.cfg, self.cfg.database, name)

    def drop(self, url: str) -> None:
        name = url.rsplit("%3D", 1)[1]
        self._admin.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
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
