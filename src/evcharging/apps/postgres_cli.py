"""``postgres start|stop|status``: the command-line face of :mod:`evcharging.ops.postgres`.

As ``kafka ...`` (apps/kafka_cli.py): the main CLI only calls :func:`add_postgres_commands`, and
options come from the command line, then ``EV_PG_*`` environment variables, then the defaults.
``start`` prints the database URL to give Central and the Registry as ``--db``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg

from evcharging.apps.common import Parser, path, port, positive_seconds
from evcharging.ops import postgres
from evcharging.ops.postgres import PostgresError, ServerConfig

logger = logging.getLogger(__name__)

Command = Callable[[argparse.Namespace], int]


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


def _reporting_errors(command: Command) -> Command:
    """An expected failure is one logged line and exit code 1, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (PostgresError, psycopg.Error, OSError) as exc:
            logger.error("postgres %s failed: %s", args.postgres_command, exc)
            return 1

    return run


def _start(args: argparse.Namespace) -> int:
    sys.stdout.write(f"{postgres.start(_config(args), timeout=args.timeout)}\n")
    return 0


def _stop(args: argparse.Namespace) -> int:
    stopped = postgres.stop(_config(args), timeout=args.timeout)
    sys.stdout.write("stopped\n" if stopped else "not running\n")
    return 0


def _status(args: argparse.Namespace) -> int:
    line = postgres.status(_config(args))
    sys.stdout.write(f"{line}\n")
    return 0 if line.startswith("running") else 3  # 3 = "not running", as in LSB init scripts


def add_postgres_commands(subparsers: argparse._SubParsersAction[Parser]) -> None:
    """Register ``postgres <command>`` on the main CLI's subparsers; each sets ``func=``."""
    pg = subparsers.add_parser("postgres", help="the project's own PostgreSQL server")
    commands = pg.add_subparsers(dest="postgres_command", required=True)
    specs: list[tuple[str, Command, str, float | None]] = [
        ("start", _start, "start the server (idempotent), create the database, print its URL", 60),
        ("stop", _stop, "stop our server (only the one in --data-dir)", 30),
        ("status", _status, "say whether our server is running", None),
    ]
    for name, command, help_text, timeout in specs:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _server_options(sub)
        if timeout is not None:
            sub.option("--timeout", type=positive_seconds, default=timeout, help="seconds")
        sub.set_defaults(func=_reporting_errors(command))
