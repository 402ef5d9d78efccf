"""EV_OCPP: the OCPP 1.6J gateway; real chargers join the network as CPs.

    EV_OCPP KAFKA_HOST:PORT CENTRAL_HOST:PORT [--listen 0.0.0.0:9000]
            [--tls-cert F --tls-key F [--client-ca F]] [--credentials-dir DIR]
            [--state-dir DIR] [--audit-file F] [--name ocpp]

Thin main: arguments -> settings -> wire `GatewayService` to Kafka (one publisher and one reader
of cp-commands for every charger it holds, with one codec holding every CP's key), to Central's
Monitor port (one authenticated link per charger, `CentralLinks`), to the chargers' WebSocket
endpoint (`OcppServer`) and to its state file, then run. Chargers are admitted only once the
reader of Central's commands is positioned, so no command for them is missed. docs/ocpp.md.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evcharging.adapters.audit_file import AuditFile
from evcharging.adapters.credentials_file import CredentialsFileError
from evcharging.adapters.credentials_file import load as load_credentials
from evcharging.adapters.kafka.consumer import EventConsumer
from evcharging.adapters.kafka.publisher import EventPublisher
from evcharging.adapters.kafka.router import EventRouter
from evcharging.adapters.kafka.watch import KafkaWatch
from evcharging.adapters.listening import bind
from evcharging.adapters.ocpp.server import OcppServer, tls_context
from evcharging.adapters.ocpp_state_file import JsonGatewayStore
from evcharging.adapters.sockets.central_logins import CentralLinks
from evcharging.apps.common import (
    Parser,
    bootstrap,
    host_port,
    ident,
    path,
    run,
    setup_logging,
    whole_number,
)
from evcharging.contracts.events import (
    CpReportStatus,
    CpReset,
    CpResume,
    CpStop,
    RequestDenied,
    StopSupply,
    SupplyAuthorised,
)
from evcharging.contracts.topics import CP_COMMANDS, set_namespace
from evcharging.services.audit import Audit
from evcharging.services.cp_keys import CpTopicCodec, KeyRing
from evcharging.services.ocpp_gateway import GatewayConfig, GatewayService

log = logging.getLogger("evcharging.ocpp")

AWAIT_KEYS = 10.0  # seconds a command sealed with a key not installed yet is held for it


@dataclass(frozen=True)
class GatewaySettings:
    kafka: str
    central: tuple[str, int]
    listen: tuple[str, int] = ("0.0.0.0", 9000)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    credentials_dir: Path = Path(".evcharging")
    state_dir: Path = Path(".run/ocpp")
    audit_file: Path = Path(".run/ocpp/audit.jsonl")
    name: str = "ocpp"
    heartbeat_interval: int = 60
    retry_interval: int = 10
    log_level: str = "INFO"
    kafka_namespace: str = ""

    def config(self) -> GatewayConfig:
        return GatewayConfig(
            heartbeat_interval=self.heartbeat_interval, retry_interval=self.retry_interval
        )


def build_router(service: GatewayService) -> EventRouter:
    """One handler per cp-commands event; each hands the command to the service."""
    router = EventRouter("EV_OCPP")
    for kind, handle in (
        (SupplyAuthorised, service.on_supply_authorised),
        (RequestDenied, service.on_request_denied),
        (StopSupply, service.on_stop_supply),
        (CpStop, service.on_cp_stop),
        (CpResume, service.on_cp_resume),
        (CpReportStatus, service.on_report_status),
        (CpReset, service.on_reset),
    ):
        router.on(kind)(_handler(handle))
    return router


def _handler(handle: Any) -> Any:
    async def run_it(ev: Any) -> None:
        handle(ev)

    return run_it


class GatewayApp:
    """Everything EV_OCPP runs, startable and stoppable in-process (tests use it directly)."""

    def __init__(self, settings: GatewaySettings, *, clock: Any = time.monotonic) -> None:
        self.settings = s = settings
        self.codec = CpTopicCodec(KeyRing())  # every held CP's key, as Central grants them
        self.publisher = EventPublisher(s.kafka, source="EV_OCPP", codec=self.codec)
        self.audit_file = AuditFile(s.audit_file)
        self.audit = Audit([self.audit_file])
        self.logins = CentralLinks(s.central, self.codec)
        tls = None
        if s.tls_cert is not None and s.tls_key is not None:
            tls = tls_context(s.tls_cert, s.tls_key, s.client_ca)
        self.server = OcppServer(
            *s.listen, tls=tls, secret_for=self.enrolled_secret, audit=self.audit
        )
        self.service = GatewayService(
            self.publisher,
            self.logins,
            self.server,
            JsonGatewayStore(s.state_dir),
            clock,
            s.config(),
            audit=self.audit,
        )
        self.server.service = self.service
        self.consumer = EventConsumer(
            s.kafka,
            f"ocpp-{s.name}",
            build_router(self.service),
            topics=[CP_COMMANDS],
            offset_reset="latest",
            static_member=f"ocpp-{s.name}",
            codec=self.codec,
            await_keys=AWAIT_KEYS,
            accept_key=self.service.holds,
        )
        self.ready = asyncio.Event()  # chargers are admitted
        self.failed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def enrolled_secret(self, cp_id: str) -> str | None:
        """Profile 3: the secret enrolled for the CP in the credentials folder, as a Monitor
        keeps it (`cp-<ID>.json`, mode 0600)."""
        file = self.settings.credentials_dir / f"cp-{cp_id}.json"
        try:
            stored = load_credentials(file)
        except CredentialsFileError as exc:
            log.warning("cp=%s: %s", cp_id, exc)
            return None
        if stored is None or stored.cp_id != cp_id:
            log.warning("cp=%s: no credentials enrolled in %s", cp_id, file)
            return None
        return stored.secret

    async def start(self) -> None:
        s = self.settings
        listener = bind("the OCPP endpoint", *s.listen)
        self.publisher.start_in_background()
        self._spawn(KafkaWatch(s.kafka).run(), "kafka-watch")
        self._spawn(self.service.run_outbox(), "outbox")
        self._spawn(self.consumer.run(), "consumer")
        await self.consumer.ready.wait()
        await self.server.start(listener)
        _warn_if_clear(s)
        self.ready.set()

    async def run(self) -> int:
        try:
            await self.start()
            await self.failed.wait()
            return 1
        finally:
            await self.stop()

    async def stop(self, flush_timeout: float = 2.0) -> None:
        """Chargers' links close (Desconectado at Central, as when any Monitor stops); what the
        chargers reported is delivered first, for up to `flush_timeout`."""
        await self.server.close()
        if self.publisher.connected:
            try:
                async with asyncio.timeout(flush_timeout):
                    await self.service.flush()
            except TimeoutError:
                log.warning(
                    "%s events not delivered at exit; finished transactions stay in %s",
                    self.service.pending_events,
                    self.settings.state_dir,
                )
        await self.logins.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.publisher.stop()
        self.audit_file.close()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"EV_OCPP {name}")
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("%s failed", task.get_name(), exc_info=task.exception())
        self.failed.set()


def _warn_if_clear(s: GatewaySettings) -> None:
    host = s.listen[0]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if s.tls_cert is None and not loopback:
        log.warning(
            "ws:// without TLS on %s: chargers' credentials cross the network in clear "
            "(give --tls-cert/--tls-key for wss://, OCPP security profile 2)",
            host,
        )


# --- command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> GatewaySettings:
    p = Parser(prog="EV_OCPP", description="OCPP 1.6J gateway: real chargers as CPs.")
    p.positional("kafka", env="EV_KAFKA", type=bootstrap, help="Kafka bootstrap HOST:PORT")
    p.positional(
        "central", env="EV_CENTRAL", type=host_port, help="Central's Monitor socket HOST:PORT"
    )
    p.option(
        "--listen",
        env="EV_OCPP_LISTEN",
        type=host_port,
        default="0.0.0.0:9000",
        metavar="HOST:PORT",
        help="where chargers connect (ws[s]://HOST:PORT/CP_ID)",
    )
    p.option(
        "--tls-cert",
        env="EV_OCPP_TLS_CERT",
        type=path,
        metavar="FILE",
        help="wss://: the server certificate",
    )
    p.option("--tls-key", env="EV_OCPP_TLS_KEY", type=path, metavar="FILE", help="wss://: its key")
    p.option(
        "--client-ca",
        env="EV_OCPP_CLIENT_CA",
        type=path,
        metavar="FILE",
        help="accept client certificates from this CA (OCPP security profile 3)",
    )
    p.option(
        "--credentials-dir",
        env="EV_OCPP_CREDENTIALS_DIR",
        type=path,
        default=Path(".evcharging"),
        metavar="DIR",
        help="secrets of chargers with client certificates (cp-ID.json)",
    )
    p.option(
        "--state-dir",
        env="EV_OCPP_STATE_DIR",
        type=path,
        default=Path(".run/ocpp"),
        metavar="DIR",
        help="the transactions' state (DIR/ocpp-gateway/)",
    )
    p.option(
        "--audit-file",
        env="EV_OCPP_AUDIT_FILE",
        type=path,
        default=Path(".run/ocpp/audit.jsonl"),
        metavar="FILE",
        help="the gateway's audit log (JSON lines)",
    )
    p.option(
        "--name",
        env="EV_OCPP_NAME",
        type=ident,
        default="ocpp",
        help="this gateway's name (its Kafka consumer group)",
    )
    p.option(
        "--heartbeat-interval",
        env="EV_OCPP_HEARTBEAT",
        type=whole_number,
        default=60,
        metavar="SECONDS",
        help="seconds between chargers' OCPP Heartbeats",
    )
    p.option(
        "--retry-interval",
        env="EV_OCPP_RETRY",
        type=whole_number,
        default=10,
        metavar="SECONDS",
        help="seconds a refused or pending charger waits to boot again",
    )
    p.kafka_namespace_option()
    p.log_level_option()
    a = p.parse_args(argv)
    if (a.tls_cert is None) != (a.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    if a.client_ca is not None and a.tls_cert is None:
        p.error("--client-ca needs --tls-cert/--tls-key (client certificates need TLS)")
    if a.tls_cert is not None:
        for flag, file in (
            ("--tls-cert", a.tls_cert),
            ("--tls-key", a.tls_key),
            ("--client-ca", a.client_ca),
        ):
            if file is not None and not file.is_file():
                p.error(f"{flag}='{file}': no such file")
        try:
            tls_context(a.tls_cert, a.tls_key, a.client_ca)
        except (OSError, ssl.SSLError) as exc:
            p.error(f"--tls-cert/--tls-key/--client-ca: not a certificate and its key ({exc})")
    return GatewaySettings(
        kafka=a.kafka,
        central=a.central,
        listen=host_port(a.listen) if isinstance(a.listen, str) else a.listen,  # the default
        tls_cert=a.tls_cert,
        tls_key=a.tls_key,
        client_ca=a.client_ca,
        credentials_dir=a.credentials_dir,
        state_dir=a.state_dir,
        audit_file=a.audit_file,
        name=a.name,
        heartbeat_interval=a.heartbeat_interval,
        retry_interval=a.retry_interval,
        log_level=a.log_level,
        kafka_namespace=a.kafka_namespace,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    setup_logging("EV_OCPP", settings.log_level)
    if settings.log_level != "DEBUG":  # its open/close lines repeat ours
        logging.getLogger("evcharging.ocpp.websocket").setLevel(logging.WARNING)
    set_namespace(settings.kafka_namespace)
    log.info(
        "EV_OCPP starting: Kafka %s, Central %s:%s, chargers at %s:%s",
        settings.kafka,
        *settings.central,
        *settings.listen,
    )
    return run(GatewayApp(settings).run())


if __name__ == "__main__":
    sys.exit(main())
