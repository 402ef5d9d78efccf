"""`evcharging`: operations on a network (the broker, the database, later the demo)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from evcharging.adapters.db import CannotOpenDatabase, open_repository
from evcharging.adapters.db.seed import SeedError, load_seed_file, seed
from evcharging.adapters.db.sql_repository import SqlRepository
from evcharging.apps.common import (
    DATABASE_HELP,
    Parser,
    count,
    database,
    duration,
    path,
    port,
    setup_logging,
    whole_number,
)
from evcharging.apps.kafka_cli import add_kafka_commands
from evcharging.apps.postgres_cli import add_postgres_commands
from evcharging.apps.registry_cli import add_registry_commands
from evcharging.ops.demo_plan import OCPP_CHARGER

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample_network.yaml"
log = logging.getLogger("evcharging.cli")


def _open(db: str) -> SqlRepository | None:
    try:
        return open_repository(db)
    except (ValueError, CannotOpenDatabase) as exc:
        log.error("cannot open the database: %s", exc)
        return None


def _db_init(args: argparse.Namespace) -> int:
    repo = _open(args.db)
    if repo is None:
        return 2
    sys.stdout.write(f"database {args.db} at schema version {repo.schema_version}\n")
    repo.close()
    return 0


def _db_seed(args: argparse.Namespace) -> int:
    source = SAMPLE if args.file is None else Path(args.file)
    repo = _open(args.db)
    if repo is None:
        return 2
    try:
        result = seed(repo, load_seed_file(source))
    except (OSError, SeedError) as exc:
        log.error("cannot seed from %s: %s", source, exc)
        return 2
    finally:
        repo.close()
    sys.stdout.write(f"seeded {result.cps} CPs and {result.drivers} drivers from {source}\n")
    return 0


def _docs_events(args: argparse.Namespace) -> int:
    from evcharging.ops.event_docs import render

    args.out.write_text(render() + "\n", encoding="utf-8")
    sys.stdout.write(f"wrote {args.out}\n")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import asyncio

    from evcharging.ops.demo import Demo, DemoConfig

    cfg = DemoConfig(
        cps=args.cps,
        drivers=args.drivers,
        duration=args.for_,
        host=args.host,
        kafka_port=args.kafka_port,
        central_port=args.central_port,
        http_port=args.http_port,
        registry_port=args.registry_port,
        weather_port=args.weather_port,
        front_port=args.front_port,
        ocpp_port=args.ocpp_port,
        ocpp_charger=args.ocpp_charger,
        engine_base_port=args.engine_base_port,
        driver_web_base_port=args.driver_web_base_port,
        admin_token=args.admin_token,
        workdir=args.workdir,
    )
    return asyncio.run(Demo(cfg).run())


def build_parser() -> Parser:
    parser = Parser(prog="evcharging", description=__doc__)
    parser.log_level_option()
    sub = parser.add_subparsers(dest="command", required=True)
    add_kafka_commands(sub)
    add_postgres_commands(sub)
    add_registry_commands(sub)
    db = sub.add_parser("db", help="the Central's database").add_subparsers(
        dest="db_command", required=True
    )
    for name, func, text in (
        ("init", _db_init, "create or migrate the schema"),
        ("seed", _db_seed, "load CPs and drivers"),
    ):
        cmd = db.add_parser(name, help=text)
        cmd.option(
            "--db", env="EV_DB", type=database, default=".run/central.db", help=DATABASE_HELP
        )
        if name == "seed":
            cmd.add_argument("file", nargs="?", help=f"YAML or JSON file (default: {SAMPLE.name})")
        cmd.set_defaults(func=func)
    demo = sub.add_parser("demo", help="run a whole network on this machine until Ctrl+C")
    demo.option("--cps", type=count, default=5, help="charging points (Monitor + Engine each)")
    demo.option("--drivers", type=whole_number, default=3, help="drivers, each on its own CPs")
    demo.option(
        "--for", dest="for_", type=duration, metavar="DURATION", help="stop after e.g. 40s or 5m"
    )
    demo.option("--host", env="EV_DEMO_HOST", default="127.0.0.1", help="address of every program")
    for flag, default, what in (
        ("--kafka-port", 9092, "the broker"),
        ("--central-port", 7000, "Central's Monitor sockets"),
        ("--http-port", 8000, "Central's HTTP API and dashboard"),
        ("--registry-port", 8443, "EV_Registry (HTTPS)"),
        ("--weather-port", 8081, "the local weather service (EV_W asks it)"),
        ("--front-port", 8080, "the public front (EV_Front)"),
        ("--ocpp-port", 9000, "EV_OCPP, where OCPP chargers connect (wss)"),
        ("--engine-base-port", 7100, "the Engines' Monitor links (one port after it per CP)"),
        ("--driver-web-base-port", 8100, "the driver dashboards (one port after it per driver)"),
    ):
        demo.option(flag, type=port, default=default, help=f"port of {what}")
    demo.option(
        "--admin-token", env="EV_ADMIN_TOKEN", default="demo-admin", help="Central's admin token"
    )
    demo.option("--workdir", type=path, default=Path(".run/demo"), help="logs, database, files")
    demo.option(
        "--ocpp-charger",
        type=path,
        default=OCPP_CHARGER,
        help="the real OCPP charger run against EV_OCPP: ocpp-go's example charge point "
        "(make ocpp-go-cp); the demo runs without it when it is not there",
        metavar="PROGRAM",
    )
    demo.set_defaults(func=_demo)
    docs = sub.add_parser("docs", help="generated documentation").add_subparsers(
        dest="docs_command", required=True
    )
    events = docs.add_parser("events", help="write the Kafka event contract (docs/events.md)")
    events.option("--out", type=path, default=Path("docs/events.md"), help="where to write")
    events.set_defaults(func=_docs_events)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("evcharging", args.log_level)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
