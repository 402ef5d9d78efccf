"""``kafka fetch|start|stop|status|topics``: the command-line face of :mod:`kafka_broker`.

Why a separate module: the main CLI only calls :func:`add_kafka_commands`, and the broker module
(in ``ops/``) stays free of argument parsing.  Options come from the command line, then
``EV_KAFKA_*`` environment variables, then the defaults of :class:`BrokerConfig`, by the
programs' one rule (:class:`evcharging.apps.common.Parser`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from aiokafka.errors import KafkaError

from evcharging.apps.common import Parser, path, port, positive_seconds
from evcharging.contracts.topics import set_namespace
from evcharging.ops import kafka_broker
from evcharging.ops.kafka_broker import BrokerConfig, BrokerError

logger = logging.getLogger(__name__)

Command = Callable[[argparse.Namespace], int]


def _broker_options(p: Parser) -> None:
    """Options shared by every ``kafka`` subcommand."""
    p.option("--host", env="EV_KAFKA_HOST", default="127.0.0.1", help="listen address")
    p.option("--port", env="EV_KAFKA_PORT", type=port, default=9092, help="broker port")
    p.option(
        "--controller-port",
        env="EV_KAFKA_CONTROLLER_PORT",
        type=port,
        help="KRaft controller port, default port+1",
    )
    p.option(
        "--advertised-host",
        env="EV_KAFKA_ADVERTISED_HOST",
        help="address clients use, default --host",
    )
    p.option(
        "--data-dir",
        env="EV_KAFKA_DATA_DIR",
        type=path,
        default=Path(".run/kafka"),
        help="config, pid, log and data",
    )
    p.option("--heap", env="EV_KAFKA_HEAP", default="512m", help="JVM max heap")


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
    set_namespace(args.kafka_namespace)  # another network's topics on the same broker
    asyncio.run(kafka_broker.create_topics(_config(args).bootstrap))
    return 0


def add_kafka_commands(subparsers: argparse._SubParsersAction[Parser]) -> None:
    """Register ``kafka <command>`` on the main CLI's subparsers; each sets ``func=``."""
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
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _broker_options(sub)
        if timeout is not None:
            sub.option("--timeout", type=positive_seconds, default=timeout, help="seconds")
        if name == "topics":
            sub.kafka_namespace_option()
        sub.set_defaults(func=_reporting_errors(command))
