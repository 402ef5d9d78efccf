"""EV_Registry: alta, baja and consulta of charging points, over HTTPS only.

    EV_Registry --cert server.pem --key server.key [--host 0.0.0.0] [--port 8443]
                [--db .run/central.db] [--admin-token TOKEN] [--audit-file FILE]

Thin main, shaped as the other programs: arguments -> `RegistrySettings` -> `RegistryApp`
(database, audit log, the REST API under uvicorn with TLS) -> run.  There is no plain-HTTP port
at all: without a certificate and its key the program does not start (`evcharging certs init`
makes them).  It shares the database with Central: Central reads the verifiers it stores.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from evcharging.adapters.audit_file import AuditFile
from evcharging.adapters.db import open_repository
from evcharging.adapters.listening import bind
from evcharging.adapters.web.embedded import EmbeddedServer
from evcharging.adapters.web.registry_api import create_app
from evcharging.apps.common import DATABASE_HELP, Parser, database, path, port, run, setup_logging
from evcharging.domain.throttle import FailureThrottle
from evcharging.services.audit import Audit
from evcharging.services.registry import RegistryService

log = logging.getLogger("evcharging.registry")

DEFAULT_AUDIT_FILE = Path(".evcharging/registry-audit.jsonl")


@dataclass(frozen=True)
class RegistrySettings:
    cert: Path
    key: Path
    host: str = "0.0.0.0"
    port: int = 8443
    db: str = ".run/central.db"
    admin_token: str | None = None
    audit_file: Path = DEFAULT_AUDIT_FILE
    log_level: str = "INFO"

    def __repr__(self) -> str:  # never print the admin token
        return (
            f"RegistrySettings(host={self.host!r}, port={self.port}, db={self.db!r}, "
            f"cert={str(self.cert)!r}, admin_token={'<set>' if self.admin_token else None})"
        )


class RegistryApp:
    """Everything EV_Registry runs: the database, the audit log and the HTTPS API."""

    def __init__(self, settings: RegistrySettings) -> None:
        self.settings = settings

    async def run(self) -> int:
        """Runs until stopped. The certificate is checked and the port taken first, so either
        problem is said in one line before anything else starts."""
        cfg = self.settings
        problem = tls_problem(cfg.cert, cfg.key)
        if problem is not None:
            log.error("%s", problem)
            return 2
        listener = bind("the Registry's HTTPS API", cfg.host, cfg.port)
        try:
            return await self._serve(listener)
        finally:
            listener.close()

    async def _serve(self, listener: socket.socket) -> int:
        cfg = self.settings
        repo = open_repository(cfg.db)
        audit_file = AuditFile(cfg.audit_file)
        service = RegistryService(
            repo, Audit([repo, audit_file]), FailureThrottle(), admin_token=cfg.admin_token
        )
        http = EmbeddedServer(
            uvicorn.Config(
                create_app(service),
                host=cfg.host,
                port=cfg.port,
                ssl_certfile=str(cfg.cert),
                ssl_keyfile=str(cfg.key),
                log_level="warning",
                lifespan="off",
                server_header=False,
            )
        )
        log.info(
            "EV_Registry on https://%s:%s (OpenAPI at /docs); database %s; audit log %s",
            cfg.host,
            cfg.port,
            cfg.db,
            cfg.audit_file,
        )
        if not cfg.admin_token:
            log.warning("no admin token (--admin-token, EV_ADMIN_TOKEN): only CPs may rotate")
        try:
            await http.serve([listener])
        finally:
            http.should_exit = True
            audit_file.close()
            repo.close()
        return 0


def tls_problem(cert: Path, key: Path) -> str | None:
    """Why the certificate and key cannot serve TLS, in one line; None when they can."""
    for file in (cert, key):
        if not file.is_file():
            return f"cannot read {file}: no such file (make one with: evcharging certs init)"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        return f"cannot use {cert} and {key} for TLS: {exc}"
    return None


# --- command line -------------------------------------------------------------------------


def build_parser() -> Parser:
    p = Parser(
        prog="EV_Registry",
        description="Registry of the EVCharging Network: alta, baja and consulta of CPs (HTTPS)",
    )
    p.option("--host", env="EV_REGISTRY_HOST", default="0.0.0.0", help="HTTPS bind address")
    p.option("--port", env="EV_REGISTRY_PORT", type=port, default=8443, help="HTTPS port")
    p.option(
        "--db",
        env="EV_DB",
        type=database,
        default=".run/central.db",
        help=f"the network's database, shared with Central: {DATABASE_HELP}",
    )
    p.option(
        "--cert",
        env="EV_REGISTRY_CERT",
        type=path,
        metavar="PEM",
        help="the server certificate (required: HTTPS only; evcharging certs init makes one)",
    )
    p.option(
        "--key",
        env="EV_REGISTRY_KEY",
        type=path,
        metavar="PEM",
        help="the certificate's private key (required)",
    )
    p.option(
        "--admin-token",
        env="EV_ADMIN_TOKEN",
        help="Central's admin token: lets an admin rotate or delete any CP's credentials",
    )
    p.option(
        "--audit-file",
        env="EV_REGISTRY_AUDIT_FILE",
        type=path,
        default=DEFAULT_AUDIT_FILE,
        metavar="FILE",
        help="the audit log as JSON lines (also written to the database)",
    )
    p.log_level_option()
    return p


def parse_args(argv: list[str] | None = None) -> RegistrySettings:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.cert is None or a.key is None:
        parser.error("--cert and --key are required (HTTPS only): evcharging certs init makes them")
    return RegistrySettings(
        cert=a.cert,
        key=a.key,
        host=a.host,
        port=a.port,
        db=a.db,
        admin_token=a.admin_token or None,
        audit_file=a.audit_file,
        log_level=a.log_level,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    setup_logging("EV_Registry", cfg.log_level)
    return run(RegistryApp(cfg).run())


if __name__ == "__main__":
    sys.exit(main())
