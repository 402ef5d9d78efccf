"""`evcharging certs ...` (the local CA for the Registry's HTTPS and the OCPP chargers' client
certificates) and `evcharging cp enrol`
(an operator registers a CP offline, at the database, and hands it its credentials file)."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evcharging.adapters import credentials_file
from evcharging.adapters.credentials_file import StoredCredentials
from evcharging.adapters.db import CannotOpenDatabase, open_repository
from evcharging.apps.common import DATABASE_HELP, database, ident, path, positive_decimal, text
from evcharging.domain.throttle import FailureThrottle
from evcharging.ops import certs
from evcharging.services.audit import Audit
from evcharging.services.registry import Caller, RegistryRefusal, RegistryService

log = logging.getLogger("evcharging.cli")


def _typed(rule: Any) -> Any:
    """A value rule for a plain (repeatable) argparse option: its ValueError as argparse's."""

    def check(value: str) -> Any:
        try:
            return rule(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    check.__name__ = rule.__name__
    return check


def _names(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--host",
        dest="hosts",
        action="append",
        default=[],
        type=_typed(certs.host_name),
        metavar="NAME",
        help="a DNS name the server is reached by (repeat; localhost is always in)",
    )
    cmd.add_argument(
        "--ip",
        dest="ips",
        action="append",
        default=[],
        type=_typed(certs.ip_address),
        metavar="ADDR",
        help="an IP address the server is reached by (repeat; 127.0.0.1 is always in)",
    )
    cmd.add_argument("--force", action="store_true", help="replace files that already exist")


def _certs_init(args: argparse.Namespace) -> int:
    return _report(lambda: certs.init(args.dir, args.hosts, args.ips, force=args.force))


def _certs_server(args: argparse.Namespace) -> int:
    return _report(lambda: certs.issue(args.dir, args.name, args.hosts, args.ips, force=args.force))


def _certs_client(args: argparse.Namespace) -> int:
    return _report(lambda: list(certs.issue_client(args.dir, args.cp_id, force=args.force).made))


def _report(make: Any) -> int:
    try:
        made: list[certs.Made] = make()
    except certs.CertsError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("cannot write the certificates: %s", exc)
        return 2
    sys.stdout.write("".join(f"made {m.line()}\n" for m in made))
    return 0


def _cp_enrol(args: argparse.Namespace) -> int:
    if args.location is None or args.price is None:
        log.error("cp enrol needs --location and --price")
        return 2
    target: Path = args.credentials or credentials_file.default_path(args.cp_id)
    try:
        repo = open_repository(args.db)
    except (ValueError, CannotOpenDatabase) as exc:
        log.error("cannot open the database: %s", exc)
        return 2
    try:
        service = RegistryService(repo, Audit([repo]), FailureThrottle())
        issued = service.register(args.cp_id, args.location, args.price, Caller.operator())
        credentials_file.save(
            target,
            StoredCredentials(
                cp_id=args.cp_id,
                secret=issued.secret,
                registry=args.registry,
                issued_at=datetime.now(UTC).isoformat(),
            ),
        )
    except RegistryRefusal:  # the service has said why, once
        return 2
    except OSError as exc:
        log.error("cannot write %s: %s", target, exc)
        return 2
    finally:
        repo.close()
    done = (
        "credentials rotated (the old secret no longer works)" if issued.rotated else "registered"
    )
    sys.stdout.write(
        f"CP {args.cp_id} {done}; its credentials are in {target} (mode 0600): "
        f"give them to its Monitor (--credentials)\n"
    )
    return 0


def add_registry_commands(sub: Any) -> None:
    """`certs init`, `certs server` and `cp enrol` on the `evcharging` command."""
    group = sub.add_parser("certs", help="the local CA and certificates for the Registry's HTTPS")
    commands = group.add_subparsers(dest="certs_command", required=True)
    init = commands.add_parser(
        "init", help="a new CA (ca.pem, ca.key) and a server certificate (server.pem, server.key)"
    )
    init.option("--dir", type=path, default=Path(".evcharging/certs"), help="where to write")
    _names(init)
    init.set_defaults(func=_certs_init)
    server = commands.add_parser(
        "server", help="another server certificate (NAME.pem, NAME.key) from the folder's CA"
    )
    server.option("--dir", type=path, default=Path(".evcharging/certs"), help="the CA's folder")
    server.option(
        "--name", type=_typed(certs.server_name), default="server", help="base name of the files"
    )
    _names(server)
    server.set_defaults(func=_certs_server)
    client = commands.add_parser(
        "client",
        help="a charger's client certificate (cp-ID.pem, cp-ID.key; CN = the CP id) for OCPP "
        "security profile 3, from the folder's CA",
    )
    client.option("--dir", type=path, default=Path(".evcharging/certs"), help="the CA's folder")
    client.add_argument(
        "--cp", dest="cp_id", type=_typed(ident), required=True, help="the CP id", metavar="ID"
    )
    client.add_argument("--force", action="store_true", help="replace files that already exist")
    client.set_defaults(func=_certs_client)

    cp = sub.add_parser("cp", help="charging points' credentials").add_subparsers(
        dest="cp_command", required=True
    )
    enrol = cp.add_parser(
        "enrol", help="register a CP at the database (as an admin) and write its credentials file"
    )
    enrol.positional("cp_id", type=ident, help="the CP's id", metavar="CP_ID")
    enrol.option("--db", env="EV_DB", type=database, default=".run/central.db", help=DATABASE_HELP)
    enrol.option("--location", help="where the CP stands", metavar="TEXT")
    enrol.option("--price", type=positive_decimal, help="its price in €/kWh", metavar="EUR_PER_KWH")
    enrol.option(
        "--credentials",
        type=path,
        help="the credentials file to write (default .evcharging/cp-<CP_ID>.json)",
        metavar="FILE",
    )
    enrol.option(
        "--registry", type=text, default="", help="the Registry's https URL, noted in the file"
    )
    enrol.set_defaults(func=_cp_enrol)
