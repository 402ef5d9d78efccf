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
from pathlib import Path

from aiokafka.errors import KafkaError

from evcharging.apps.common import Parser, path, port
from evcharging.apps.server_cli import Spec, add_server_commands, status, stopped
from evcharging.contracts.topics import set_namespace
from evcharging.ops import kafka_broker
from evcharging.ops.kafka_broker import BrokerConfig, BrokerError

logger = logging.getLogger(__name__)


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


def _fetch(args: argparse.Namespace) -> int:
    sys.stdout.write(f"{kafka_broker.fetch_jars(_config(args))}\n")
    return 0


def _start(args: argparse.Namespace) -> int:
    sys.stdout.write(f"{kafka_broker.start(_config(args), timeout=args.timeout)}\n")
    return 0


def _stop(args: argparse.Namespace) -> int:
    return stopped(kafka_broker.stop(_config(args), timeout=args.timeout))


def _status(args: argparse.Namespace) -> int:
    return status(kafka_broker.status(_config(args)))


def _topics(args: argparse.Namespace) -> int:
    set_namespace(args.kafka_namespace)  # another network's topics on the same broker
    asyncio.run(kafka_broker.create_topics(_config(args).bootstrap))
    return 0


def add_kafka_commands(subparsers: argparse._SubParsersAction[Parser]) -> None:
    """Register ``kafka <command>`` on the main CLI's subparsers; each sets ``func=``."""
    specs: list[Spec] = [
        ("fetch", _fetch, "download the Kafka jars with Maven (only if missing)", None),
        ("start", _start, "start the broker (idempotent) and print its bootstrap address", 60),
        ("stop", _stop, "stop our broker (only the one in our pid file)", 30),
        ("status", _status, "say whether our broker is running", None),
        ("topics", _topics, "create the project's topics (idempotent)", None),
    ]

    def namespace_of_topics(name: str, sub: Parser) -> None:
        if name == "topics":
            sub.kafka_namespace_option()

    add_server_commands(
        subparsers,
        "kafka",
        "the project's single-node Kafka broker",
        specs,
        _broker_options,
        (BrokerError, KafkaError),
        namespace_of_topics,
    )
