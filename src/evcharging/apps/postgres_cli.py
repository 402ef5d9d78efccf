"""``postgres start|stop|status``: the command-line face of :mod:`evcharging.ops.postgres`.

As ``kafka ...`` (apps/kafka_cli.py): the main CLI only calls :func:`add_postgres_commands`, and
options come from the command line, then ``EV_PG_*`` environment variables, then the defaults.
``start`` prints the database URL to give Central and the Registry as ``--db``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import psycopg

from evcharging.apps.common import Parser, path, port
from evcharging.apps.server_cli import Spec, add_server_commands, status, stopped
from evcharging.ops import postgres
from evcharging.ops.postgres import PostgresError, ServerConfig

logger = logging.getLogger(__name__)


def _server_options(p: Parser) -> None:
    p.option("--host", env="EV_PG_HOST", default="127.0.0.1", help="listen address")
    p.option(
        "--port",
        env="EV_PG_PORT",
        type=port,
        default=5433,
        help="server port (not 5432, which Debian's own cluster takes)",
    )
    p.option(
        "--data-dir",
        env="EV_PG_DATA_DIR",
        type=path,
        default=Path(".run/postgres"),
        help="cluster, log and lock (git-ignored under .run/)",
    )
    p.option("--database", env="EV_PG_DATABASE", default="evcharging", help="database to create")


def _config(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        data_dir=args.data_dir, host=args.host, port=args.port, database=args.database
    )


def _start(args: argparse.Namespace) -> int:
    sys.stdout.write(f"{postgres.start(_config(args), timeout=args.timeout)}\n")
    return 0


def _stop(args: argparse.Namespace) -> int:
    return stopped(postgres.stop(_config(args), timeout=args.timeout))


def _status(args: argparse.Namespace) -> int:
    return status(postgres.status(_config(args)))


def add_postgres_commands(subparsers: argparse._SubParsersAction[Parser]) -> None:
    """Register ``postgres <command>`` on the main CLI's subparsers; each sets ``func=``."""
    specs: list[Spec] = [
        ("start", _start, "start the server (idempotent), create the database, print its URL", 60),
        ("stop", _stop, "stop our server (only the one in --data-dir)", 30),
        ("status", _status, "say whether our server is running", None),
    ]
    add_server_commands(
        subparsers,
        "postgres",
        "the project's own PostgreSQL server",
        specs,
        _server_options,
        (PostgresError, psycopg.Error, OSError),
    )
