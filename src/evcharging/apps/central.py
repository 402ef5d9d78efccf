"""EV_Central: the control centre of the network.

    EV_Central PORT KAFKA_HOST:PORT [--db FILE] [--http-port 8000] [--admin-token TOKEN]
               [--heartbeat-timeout 3] [--seed FILE] [--ui auto|panel|plain]
               [--audit-file FILE] [--master-key FILE] [--cp-encryption on|off]
               [--weather-token TOKEN] [--registry-url https://HOST:PORT --registry-ca-file PEM]
               [--https-cert PEM --https-key PEM]

Thin main, shaped as the Monitor's and the Engine's: arguments -> `CentralSettings` ->
`CentralApp` (master key, DB, audit log, the CPs' keys, Kafka, Monitor sockets, HTTP API and
dashboard, the Registry's change feed, panel) -> run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import secrets
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from evcharging.adapters.audit_file import AuditFile
from evcharging.adapters.broker_state import KafkaState
from evcharging.adapters.db import open_repository
from evcharging.adapters.db.seed import load_seed_file, seed
from evcharging.adapters.kafka.consumer import EventConsumer, Rejected
from evcharging.adapters.kafka.publisher import EventPublisher
from evcharging.adapters.kafka.router import EventRouter
from evcharging.adapters.kafka.watch import KafkaWatch
from evcharging.adapters.listening import CannotListen, bind
from evcharging.adapters.master_key_file import DEFAULT_PATH as DEFAULT_MASTER_KEY
from evcharging.adapters.master_key_file import MasterKeyError, load_or_create
from evcharging.adapters.registry_client import registry_url
from evcharging.adapters.registry_probe import RegistryProbe
from evcharging.adapters.sockets.central_server import MonitorServer
from evcharging.adapters.web.central_api import create_app
from evcharging.adapters.web.embedded import EmbeddedServer
from evcharging.apps.common import (
    DATABASE_HELP,
    Parser,
    bootstrap,
    database,
    path,
    port,
    positive_seconds,
    run,
    setup_logging,
)
from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.contracts.events import (
    AuthorizationRequest,
    ChargingStopped,
    CpTelemetry,
    DriverStatusRequest,
    Event,
    SupplyEnded,
    SupplyStarted,
    set_default_source,
)
from evcharging.contracts.fields import is_valid_id
from evcharging.contracts.sealed import SEALED_TOPICS
from evcharging.contracts.topics import CP_EVENTS, DRIVER_EVENTS, base_of, set_namespace
from evcharging.domain.throttle import FailureThrottle
from evcharging.services.audit import Audit
from evcharging.services.central import CentralService
from evcharging.services.central_keys import CentralKeys
from evcharging.services.cp_keys import MasterKey
from evcharging.services.cp_login import UNKNOWN_ACTOR as UNKNOWN_CP
from evcharging.services.cp_login import CPLogin
from evcharging.services.module_health import Health, Module, ModuleHealth
from evcharging.services.roles import Roles
from evcharging.services.weather_desk import WeatherDesk

log = logging.getLogger("evcharging.central")


@dataclass(frozen=True)
class CentralSettings:
    port: int
    kafka: str
    db: str
    listen_host: str
    http_host: str
    http_port: int
    admin_token: str
    token_generated: bool
    heartbeat_timeout: float
    group_id: str
    seed_file: Path | None
    ui: str
    log_level: str = "INFO"
    kafka_namespace: str = ""  # several networks on one Kafka cluster
    audit_file: Path = Path(".run/central-audit.jsonl")
    master_key: Path = DEFAULT_MASTER_KEY
    cp_encryption: bool = True  # False: the benchmark's comparison mode only
    weather_token: str | None = None  # EV_W's; None: every weather write is refused
    registry_url: str | None = None  # probed at GET /healthz (module health)
    registry_ca: ssl.SSLContext | None = None  # verifies the Registry (its CA file)
    https_cert: Path | None = None  # with https_key: the HTTP API and pages over TLS
    https_key: Path | None = None


def default_audit_file(db: str) -> Path:
    """The audit log's JSON-lines file: next to an SQLite database; for a database server
    (`postgresql://...`), `./.evcharging/`."""
    if "://" in db and not db.startswith("sqlite:///"):
        return Path(".evcharging") / "central-audit.jsonl"
    file = db.removeprefix("sqlite:///")
    if file in ("", ":memory:"):
        return Path(".evcharging") / "central-audit.jsonl"
    return Path(file).parent / "central-audit.jsonl"


def build_router(service: CentralService) -> EventRouter:
    router = EventRouter("central")
    router.add(AuthorizationRequest, service.on_authorization_request)
    router.add(ChargingStopped, service.on_charging_stopped)
    router.add(DriverStatusRequest, service.on_driver_status_request)
    router.add(SupplyStarted, service.on_supply_started)
    router.add(CpTelemetry, service.on_telemetry)
    router.add(SupplyEnded, service.on_supply_ended)
    return router


HTTP_GRACE = 2  # seconds the HTTP server gives requests under way when Central stops
REGISTRY_POLL = 1.0  # seconds between two reads of the Registry's change feed


async def follow_registry(service: CentralService, audit: Audit) -> None:
    """Every second, the Registry's new registrations, deregistrations and rotations (the
    database is shared with EV_Registry). A failing read is said once, then retried."""
    failing = False
    while True:
        await asyncio.sleep(REGISTRY_POLL)
        try:
            await service.follow_registry()
        except Exception as exc:  # the database away must not stop Central: retried each second
            if not failing:
                log.exception("reading the Registry's change feed failed; retrying every second")
                audit.record(
                    AuditAction.ERROR,
                    actor="central",
                    outcome=Outcome.ERROR,
                    detail=f"reading the Registry's change feed failed: {type(exc).__name__}",
                )
            failing = True
        else:
            if failing:
                log.info("the Registry's change feed is read again")
            failing = False


UNENCRYPTED_WARNING = "CP messages travel unencrypted: benchmark comparison only"


def audit_consumer(
    audit: Audit,
) -> tuple[Callable[[Rejected], None], Callable[[Event, Exception], Awaitable[None]]]:
    """What Central's Kafka reader tells the audit log: a message dropped (malformed, or on
    cp-events refused by the sealed records' rules: forged, replayed, an old key, ...), a handler
    that failed (each is logged once by the reader too).  Kafka gives no address: the rows'
    `ip` is "-"; where the record was is in `topic`, `partition` and `offset`."""

    def rejected(r: Rejected) -> None:
        if base_of(r.topic) not in SEALED_TOPICS:  # a driver's topic: no CP to name
            audit.record(
                AuditAction.MESSAGE_REJECTED,
                actor="unknown",
                outcome=Outcome.DENIED,
                detail=r.reason,
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
            )
            return
        claimed = r.cp_id if r.cp_id is not None and is_valid_id(r.cp_id) else None
        audit.record(
            AuditAction.MESSAGE_REJECTED,
            actor=UNKNOWN_CP if claimed is None else f"cp:{claimed}",
            outcome=Outcome.DENIED,
            cp_id=claimed,
            detail=r.reason,
            kind=r.kind,
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
        )

    async def failed(event: Event, exc: Exception) -> None:
        audit.record(
            AuditAction.ERROR,
            actor="central",
            outcome=Outcome.ERROR,
            detail=f"handling {event.event_type} failed: {type(exc).__name__}",
            event_id=event.event_id,
            source=event.source,
        )

    return rejected, failed


async def housekeeping(service: CentralService) -> None:
    """Twice a second: lost Monitors, and the running figures written in one batch."""
    while True:
        await asyncio.sleep(min(0.5, service.heartbeat_timeout / 4))
        await service.check_heartbeats()
        service.save_running_figures()


class CentralApp:
    """Everything EV_Central runs: the database, Kafka in and out, the Monitors' socket server,
    the HTTP API with the dashboard, housekeeping and (on a terminal) the live panel."""

    def __init__(self, settings: CentralSettings) -> None:
        self.settings = settings

    async def run(self) -> int:
        """Runs until a part fails or the program is stopped. The master key is read (or made)
        and the HTTP port taken first, so an unusable key file or a port in use is said in one
        line before anything else starts."""
        cfg = self.settings
        try:
            master = load_or_create(cfg.master_key)
        except MasterKeyError as exc:
            log.error("%s", exc)
            return 2
        http_socket = bind("the HTTP API", cfg.http_host, cfg.http_port)
        try:
            return await self._serve(http_socket, master)
        finally:
            http_socket.close()

    async def _serve(self, http_socket: socket.socket, master: MasterKey) -> int:
        cfg = self.settings
        if not cfg.cp_encryption:
            log.warning(UNENCRYPTED_WARNING)
        repo = open_repository(cfg.db)
        if cfg.seed_file is not None:
            result = seed(repo, load_seed_file(cfg.seed_file))
            log.info(
                "seeded %d CPs and %d drivers from %s", result.cps, result.drivers, cfg.seed_file
            )
        set_default_source("central")
        audit_file = AuditFile(cfg.audit_file)
        audit = Audit([repo, audit_file])
        log.info("audit log: the database and %s", cfg.audit_file)
        keys = CentralKeys(repo, master, encrypt=cfg.cp_encryption)
        log.info("CP keys: %d loaded from the database (sealed with the master key)", keys.load())
        # a command for a CP without a key is not sent (nothing waits for one at Central)
        publisher = EventPublisher(cfg.kafka, "central", codec=keys.codec)
        service = CentralService(
            repo, publisher, heartbeat_timeout=cfg.heartbeat_timeout, audit=audit, keys=keys
        )
        rejected, failed = audit_consumer(audit)
        consumer = EventConsumer(
            cfg.kafka,
            cfg.group_id,
            build_router(service),
            topics=[DRIVER_EVENTS, CP_EVENTS],
            static_member=f"{cfg.group_id}-central",  # one Central per group: it takes over at once
            on_rejected=rejected,
            on_error=failed,
            codec=keys.codec,
        )
        login = CPLogin(repo, audit, FailureThrottle())  # AUTH/PROOF: auth.* rows with the IP
        monitors = MonitorServer(service, cfg.listen_host, cfg.port, login=login)
        try:
            await monitors.start()
        except CannotListen:
            audit_file.close()
            repo.close()
            raise
        publisher.start_in_background()
        health = ModuleHealth(audit, say=service.say)  # Central's messages: panel and pages
        weather = WeatherDesk(service, Roles(cfg.admin_token, cfg.weather_token), health, audit)
        app = create_app(
            service,
            cfg.admin_token,
            audit,
            weather_token=cfg.weather_token,
            health=health,
            weather=weather,
        )
        http = EmbeddedServer(http_config(app, cfg))
        scheme = "https" if cfg.https_cert else "http"
        log.info("HTTP API on %s://%s:%s (OpenAPI at /docs)", scheme, cfg.http_host, cfg.http_port)
        if cfg.token_generated:
            log.info("admin token (generated): %s", cfg.admin_token)
        if cfg.weather_token is None:
            log.info("no weather token (--weather-token): EV_W's writes are refused")
        watch = KafkaWatch(cfg.kafka)
        watch.subscribe(app.state.dashboard_hub.set_kafka)  # the admin page's Kafka banner
        watch.subscribe(app.state.public_hub.set_kafka)  # the public stream's
        kafka_health(health, watch.state, audited=False)
        watch.subscribe(lambda state: kafka_health(health, state))
        tasks = [
            asyncio.create_task(watch.run(), name="kafka-watch"),
            asyncio.create_task(weather.keep_checking(), name="weather-office"),
            asyncio.create_task(_loaded_then_frozen(service), name="load"),
            asyncio.create_task(consumer.run(), name="kafka-consumer"),
            asyncio.create_task(housekeeping(service), name="housekeeping"),
            asyncio.create_task(follow_registry(service, audit), name="registry-feed"),
            asyncio.create_task(http.serve([http_socket]), name="http"),
        ]
        if cfg.registry_url is not None and cfg.registry_ca is not None:
            probe = RegistryProbe(cfg.registry_url, cfg.registry_ca, health)
            tasks.append(asyncio.create_task(probe.run(), name="registry-probe"))
        panel = _panel(service, cfg.ui)
        try:
            with panel if panel is not None else contextlib.nullcontext():
                done, _ = await asyncio.wait(
                    [t for t in tasks if t.get_name() != "load"],
                    return_when=asyncio.FIRST_EXCEPTION,
                )
                for task in done:
                    task.result()
        finally:
            # Requests under way (EV_W saying it stops, a page's last read) are answered before
            # the rest is cancelled: a request cut by the cancel is a traceback in the log.
            http.should_exit = True
            serving = [t for t in tasks if t.get_name() == "http"]
            await asyncio.wait(serving, timeout=HTTP_GRACE + 1)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await monitors.close()
            await publisher.stop()
            service.save_running_figures()
            audit_file.close()
            repo.close()
        return 0


def http_config(app: FastAPI, cfg: CentralSettings) -> uvicorn.Config:
    """The HTTP API and pages' server: over TLS with --https-cert/--https-key."""
    return uvicorn.Config(
        app,
        host=cfg.http_host,
        port=cfg.http_port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=HTTP_GRACE,
        ssl_certfile=cfg.https_cert,
        ssl_keyfile=cfg.https_key,
    )


def kafka_health(health: ModuleHealth, state: KafkaState, *, audited: bool = True) -> None:
    """The Kafka watch's word, in the modules' health (audited on each change; the watch logs
    it)."""
    if state.up:
        health.set(Module.KAFKA, Health.UP, "reachable", audited=audited, said=True)
    else:
        problem = state.problem or "unreachable"
        health.set(Module.KAFKA, Health.DOWN, problem, audited=audited, said=True)


async def _loaded_then_frozen(service: CentralService) -> None:
    """Load, then move everything made so far out of the collector's reach (`gc.freeze`) and
    collect young objects less often: full passes over the loaded network are pauses of
    milliseconds, a likely part of the authorisation tail (docs/performance.md, issue 14)."""
    await service.load()
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)


def _panel(service: CentralService, ui: str) -> contextlib.AbstractContextManager[object] | None:
    """The live panel, or None for plain log lines. While the panel is shown, log lines reach the
    terminal only through it (above it, and in its messages area): docs/terminal-panel.md."""
    if ui == "plain" or (ui == "auto" and not sys.stdout.isatty()):
        return None
    from evcharging.adapters.tui.central_panel import live_panel

    return live_panel(service)


# --- command line -------------------------------------------------------------------------


def build_parser() -> Parser:
    p = Parser(prog="EV_Central", description="Control centre of the EVCharging Network")
    p.positional("port", env="EV_CENTRAL_PORT", type=port, help="TCP port where Monitors connect")
    p.positional("kafka", env="EV_KAFKA", type=bootstrap, help="Kafka bootstrap HOST:PORT")
    p.option("--db", env="EV_DB", type=database, default=".run/central.db", help=DATABASE_HELP)
    p.option(
        "--listen-host", env="EV_CENTRAL_HOST", default="0.0.0.0", help="bind address for Monitors"
    )
    p.option("--http-host", env="EV_HTTP_HOST", default="0.0.0.0", help="HTTP bind address")
    p.option(
        "--http-port",
        env="EV_HTTP_PORT",
        type=port,
        default=8000,
        help="HTTP API and dashboard port",
    )
    p.option(
        "--admin-token",
        env="EV_ADMIN_TOKEN",
        help="token for admin actions; generated and printed if none",
    )
    p.option(
        "--heartbeat-timeout",
        env="EV_HEARTBEAT_TIMEOUT",
        type=positive_seconds,
        default=3.0,
        help="seconds of Monitor silence before its CP is Desconectado",
    )
    p.option(
        "--group-id", env="EV_CENTRAL_GROUP", default="ev-central", help="Kafka consumer group"
    )
    p.option(
        "--seed", env="EV_SEED", type=path, help="YAML/JSON of CPs and drivers to load at start"
    )
    p.option(
        "--ui",
        env="EV_UI",
        choices=("auto", "panel", "plain"),
        default="auto",
        help="live panel, or plain log lines (auto: panel on a terminal)",
    )
    p.option(
        "--audit-file",
        env="EV_AUDIT_FILE",
        type=path,
        help="the audit log's JSON-lines file, rotated (default: central-audit.jsonl next to "
        "the database)",
    )
    p.option(
        "--master-key",
        env="EV_MASTER_KEY_FILE",
        type=path,
        default=DEFAULT_MASTER_KEY,
        metavar="FILE",
        help="the key that seals the CP keys in the database; made (mode 0600) on first start; "
        "keep it with Central, never in git (EV_MASTER_KEY, the key itself in base64, takes its "
        "place)",
    )
    p.option(
        "--cp-encryption",
        env="EV_CP_ENCRYPTION",
        choices=("on", "off"),
        default="on",
        help="encrypt every Engine <-> Central message with the CP's key; off is for the "
        "benchmark's comparison only",
    )
    p.option(
        "--weather-token",
        env="EV_WEATHER_TOKEN",
        help="the weather office EV_W's token for its writes (alerts, reports); none: refused",
    )
    p.option(
        "--registry-url",
        env="EV_REGISTRY_URL",
        type=registry_url,
        metavar="URL",
        help="EV_Registry's https://HOST:PORT, probed (GET /healthz) every 2 s for the modules' "
        "health; none: not watched",
    )
    p.option(
        "--registry-ca-file",
        env="EV_REGISTRY_CA_FILE",
        type=path,
        metavar="PEM",
        help="the CA that signed the Registry's certificate (needed with --registry-url)",
    )
    p.option(
        "--https-cert",
        env="EV_HTTPS_CERT",
        type=path,
        metavar="PEM",
        help="serve the HTTP API and pages over TLS with this certificate (with --https-key; "
        "made by `evcharging certs`)",
    )
    p.option("--https-key", env="EV_HTTPS_KEY", type=path, metavar="PEM", help="its private key")
    p.kafka_namespace_option()
    p.log_level_option()
    return p


def _tls_options(p: Parser, a: argparse.Namespace) -> ssl.SSLContext | None:
    """The Registry probe's CA and the HTTPS pair, checked now: a bad file is one line, exit 2."""
    if (a.https_cert is None) != (a.https_key is None):
        p.error("--https-cert and --https-key go together")
    if a.https_cert is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                a.https_cert, a.https_key
            )
        except (OSError, ssl.SSLError) as exc:
            p.error(f"--https-cert/--https-key: cannot use them: {exc.strerror or exc}")
    if a.registry_url is None:
        if a.registry_ca_file is not None:
            p.error("--registry-ca-file needs --registry-url https://HOST:PORT")
        return None
    if a.registry_ca_file is None:
        p.error("--registry-url needs --registry-ca-file (the CA of the Registry's certificate)")
    try:
        return ssl.create_default_context(cafile=str(a.registry_ca_file))
    except (OSError, ssl.SSLError) as exc:
        p.error(f"--registry-ca-file={str(a.registry_ca_file)!r}: {exc.strerror or exc}")


def parse_args(argv: list[str] | None = None) -> CentralSettings:
    p = build_parser()
    a = p.parse_args(argv)
    token = a.admin_token or secrets.token_urlsafe(16)
    if a.weather_token and a.weather_token == token:
        p.error("--weather-token must differ from the admin token")
    registry_ca = _tls_options(p, a)
    return CentralSettings(
        port=a.port,
        kafka=a.kafka,
        db=a.db,
        listen_host=a.listen_host,
        http_host=a.http_host,
        http_port=a.http_port,
        admin_token=token,
        token_generated=not a.admin_token,
        heartbeat_timeout=a.heartbeat_timeout,
        group_id=a.group_id,
        seed_file=a.seed,
        ui=a.ui,
        log_level=a.log_level,
        kafka_namespace=a.kafka_namespace,
        audit_file=a.audit_file or default_audit_file(a.db),
        master_key=a.master_key,
        cp_encryption=a.cp_encryption == "on",
        weather_token=a.weather_token or None,
        registry_url=a.registry_url,
        registry_ca=registry_ca,
        https_cert=a.https_cert,
        https_key=a.https_key,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    setup_logging("EV_Central", cfg.log_level)
    set_namespace(cfg.kafka_namespace)
    return run(CentralApp(cfg).run())


if __name__ == "__main__":
    sys.exit(main())
