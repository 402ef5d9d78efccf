"""`evcharging`: operations on a network (the broker, the database, later the demo)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from evcharging.adapters.db.seed import SeedError, load_seed_file, seed
from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.apps.common import env, setup_logging
from evcharging.ops.kafka_cli import add_kafka_commands

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample_network.yaml"
log = logging.getLogger("evcharging.cli")


def _db_init(args: argparse.Namespace) -> int:
    repo = SqliteRepository(args.db)
    sys.stdout.write(f"database {args.db} at schema version {repo.schema_version}\n")
    repo.close()
    return 0


def _db_seed(args: argparse.Namespace) -> int:
    path = SAMPLE if args.file is None else Path(args.file)
    repo = SqliteRepository(args.db)
    try:
        result = seed(repo, load_seed_file(path))
    except (OSError, SeedError) as exc:
        log.error("cannot seed from %s: %s", path, exc)
        return 2
    finally:
        repo.close()
    sys.stdout.write(f"seeded {result.cps} CPs and {result.drivers} drivers from {path}\n")
    return 0


def _docs_events(args: argparse.Namespace) -> int:
    from evcharging.ops.event_docs import render

    Path(args.out).write_text(render() + "\n", encoding="utf-8")
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
        engine_base_port=args.engine_base_port,
        driver_web_base_port=args.driver_web_base_port,
        admin_token=args.admin_token,
        workdir=Path(args.workdir),
    )
    return asyncio.run(Demo(cfg).run())


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return int(text)

    return parse


def _duration(text: str) -> float:
    from evcharging.ops.demo import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a duration like 40s, 5m or 1h, got {text!r}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evcharging", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_kafka_commands(sub)
    db = sub.add_parser("db", help="the Central's database").add_subparsers(
        dest="db_command", required=True
    )
    for name, func, text in (
        ("init", _db_init, "create or migrate the schema"),
        ("seed", _db_seed, "load CPs and drivers"),
    ):
        cmd = db.add_parser(name, help=text)
        cmd.add_argument(
            "--db", default=env("EV_DB", ".run/central.db"), help="SQLite file (env EV_DB)"
        )
        if name == "seed":
            cmd.add_argument("file", nargs="?", help=f"YAML or JSON file (default: {SAMPLE.name})")
        cmd.set_defaults(func=func)
    demo = sub.add_parser("demo", help="run a whole network on this machine until Ctrl+C")
    demo.add_argument(
        "--cps", type=_at_least(1), default=5, help="charging points (Monitor + Engine each)"
    )
    demo.add_argument(
        "--drivers", type=_at_least(0), default=3, help="drivers, each on its own CPs"
    )
    demo.add_argument(
        "--for", dest="for_", type=_duration, metavar="DURATION", help="stop after e.g. 40s or 5m"
    )
    demo.add_argument("--host", default=env("EV_DEMO_HOST", "127.0.0.1"))
    demo.add_argument("--kafka-port", type=int, default=9092)
    demo.add_argument("--central-port", type=int, default=7000)
    demo.add_argument("--http-port", type=int, default=8000)
    demo.add_argument("--engine-base-port", type=int, default=7100)
    demo.add_argument("--driver-web-base-port", type=int, default=8100)
    demo.add_argument("--admin-token", default=env("EV_ADMIN_TOKEN", "demo-admin"))
    demo.add_argument("--workdir", default=".run/demo")
    demo.set_defaults(func=_demo)
    docs = sub.add_parser("docs", help="generated documentation").add_subparsers(
        dest="docs_command", required=True
    )
    events = docs.add_parser("events", help="write the Kafka event contract (docs/events.md)")
    events.add_argument("--out", default="docs/events.md")
    events.set_defaults(func=_docs_events)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("evcharging")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
