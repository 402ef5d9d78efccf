"""``kafka fetch|start|stop|status|topics``: the command-line face of :mod:`kafka_broker`.

Why a separate module: the main CLI only calls :func:`add_kafka_commands`, and the broker module
stays free of argument parsing.  Options come from the command line, then ``EV_KAFKA_*``
environment variables, then the defaults of :class:`BrokerConfig`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from aiokafka.errors import KafkaError

from evcharging.ops import kafka_broker
from evcharging.ops.kafka_broker import BrokerConfig, BrokerError

logger = logging.getLogger(__name__)

Command = Callable[[argparse.Namespace], int]


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(name, default)


def _common_options() -> argparse.ArgumentParser:
    """Options shared by every ``kafka`` subcommand (defaults read from the environment)."""
    parent = argparse.ArgumentParser(add_help=False)
    opt = parent.add_argument
    opt(
        "--host",
        default=_env("EV_KAFKA_HOST", "127.0.0.1"),
        help="listen address (EV_KAFKA_HOST; %(default)s)",
    )
    opt(
        "--port",
        type=int,
        default=_env("EV_KAFKA_PORT", "9092"),
        help="broker port (EV_KAFKA_PORT; %(default)s)",
    )
    opt(
        "--controller-port",
        type=int,
        default=_env("EV_KAFKA_CONTROLLER_PORT", None),
        help="KRaft controller port, default port+1 (EV_KAFKA_CONTROLLER_PORT)",
    )
    opt(
        "--advertised-host",
        default=_env("EV_KAFKA_ADVERTISED_HOST", None),
        help="address clients use, default --host (EV_KAFKA_ADVERTISED_HOST)",
    )
    opt(
        "--data-dir",
        type=Path,
        default=_env("EV_KAFKA_DATA_DIR", ".run/kafka"),
        help="config, pid, log and data (EV_KAFKA_DATA_DIR; %(default)s)",
    )
    opt(
        "--heap",
        default=_env("EV_KAFKA_HEAP", "512m"),
        help="JVM max heap (EV_KAFKA_HEAP; %(default)s)",
    )
    return parent


def _config(args: argparse.Namespace) -> BrokerConfig:
    return BrokerConfig(
        host=args.host,
        port=args.port,
        controller_port=args.controller_port,
        advertised_host=args.advertised_host,
        data_dir=args.data_dir,
        heap=args.heap,
    )


def _reporting_errors(command: Command) -> Command:
    """Turn an expected failure into a logged message and exit code 1 instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (BrokerError, KafkaError) as exc:
            logger.error("kafka %s failed: %s", args.kafka_command, exc)
            return 1

    return run


def _fetch(args: argparse.Namespace) -> int:
    sys.stdout.write(f"{kafka_broker.fetch_jars(_config(args))}\n")
    return 0


def _start(args: argparse.Namespace) -> int:
    sys.stdout.write(f"{kafka_broker.start(_config(args), timeout=args.timeout)}\n")
    return 0


def _stop(args: argparse.Namespace) -> int:
    stopped = kafka_broker.stop(_config(args), timeout=args.timeout)
    sys.stdout.write("stopped\n" if stopped else "not running\n")
    return 0


def _status(args: argparse.Namespace) -> int:
    line = kafka_broker.status(_config(args))
    sys.stdout.write(f"{line}\n")
    return 0 if line.startswith("running") else 3  # 3 = "not running", as in LSB init scripts


def _topics(args: argparse.Namespace) -> int:
    asyncio.run(kafka_broker.create_topics(_config(args).bootstrap))
    return 0


def add_kafka_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``kafka <command>`` on the main CLI's subparsers; each sets ``func=``."""
    parent = _common_options()
    kafka = subparsers.add_parser("kafka", help="the project's single-node Kafka broker")
    commands = kafka.add_subparsers(dest="kafka_command", required=True)
    specs: list[tuple[str, Command, str, float | None]] = [
        ("fetch", _fetch, "download the Kafka jars with Maven (only if missing)", None),
        ("start", _start, "start the broker (idempotent) and print its bootstrap address", 60),
        ("stop", _stop, "stop our broker (only the one in our pid file)", 30),
        ("status", _status, "say whether our broker is running", None),
        ("topics", _topics, "create the project's topics (idempotent)", None),
    ]
    for name, command, help_text, timeout in specs:
        sub = commands.add_parser(name, parents=[parent], help=help_text, description=help_text)
        if timeout is not None:
            sub.add_argument("--timeout", type=float, default=timeout, help="seconds")
        sub.set_defaults(func=_reporting_errors(command))
