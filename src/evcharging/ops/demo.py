"""`evcharging demo`: a whole network on this machine, unattended, until Ctrl+C (or --for).

It starts the Kafka broker, EV_Central seeded with exactly the drivers it starts, EV_Registry over
HTTPS (certificates from the network's own CA, made in WORKDIR/certs), N charging points (Engine
with `--auto-plug --supply-seconds S --no-menu`, then its Monitor, which registers the CP at the
Registry and authenticates with the credentials it gets) and M drivers,
each running a services file on its own CPs (`demo_plan`), and waits for each step before the next
(Central listening, Engines listening, every CP Activado), so no program starts into refusals.
It also runs EV_OCPP (wss, OCPP security profile 3) and one real OCPP charger, ocpp-go's example
charge point (`make ocpp-go-cp`): the demo registers its CP at the Registry, enrols the secret in
the gateway's credentials folder, issues its client certificate, and starts the charger again
each time it leaves (one session, 5 minutes idle, gone).  Without the binary it says so in one
line, and EV_OCPP runs with no charger.
Every program's output is merged, one `label | message` line each, into this terminal (full
logs in WORKDIR/logs/); a summary line every 30 s says the demo is busy.  Everything it started
is stopped on exit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from evcharging.adapters import credentials_file
from evcharging.adapters.credentials_file import StoredCredentials
from evcharging.adapters.registry_client import RegistryClient, RegistryError
from evcharging.domain.cp_state import CPState
from evcharging.ops import certs, kafka_broker
from evcharging.ops.demo_plan import (
    FREEZING_CITY,
    FREEZING_CYCLE,
    OCPP_CHARGER,
    PAUSE_SECONDS,
    NetworkPlan,
    OcppPlan,
    charger_env,
    compact,
    plan_network,
    plan_weather,
    render,
    restart_delay,
    with_freezing_city,
    with_ocpp_charger,
)

log = logging.getLogger(__name__)

BIN = Path(sys.executable).parent
STEP_TIMEOUT = 60.0  # for each start-up step
OWN_WIDTH = 80  # the demo's own lines, when the terminal's width is not known


@dataclass
class DemoConfig:
    cps: int = 5
    drivers: int = 3
    duration: float | None = None
    host: str = "127.0.0.1"
    kafka_port: int = 9092
    central_port: int = 7000
    http_port: int = 8000
    registry_port: int = 8443
    engine_base_port: int = 7100
    driver_web_base_port: int = 8100
    weather_port: int = 8081  # the local weather service (OpenWeather's request and JSON)
    front_port: int = 8080  # the public front (EV_Front)
    ocpp_port: int = 9000  # EV_OCPP's wss:// endpoint for OCPP chargers
    ocpp_charger: Path = OCPP_CHARGER  # ocpp-go's example charge point (make ocpp-go-cp)
    admin_token: str = "demo-admin"
    weather_token: str = "demo-weather"  # EV_W's role at API_Central (a file, never argv)
    workdir: Path = Path(".run/demo")
    summary_every: float = 30.0


class DemoError(Exception):
    """A start-up step failed; the message says which program and what to look at."""


@dataclass
class Child:
    name: str
    cp_id: str | None
    proc: asyncio.subprocess.Process
    log_file: IO[str]
    ready_text: str | None = None  # the line that says it is up (e.g. listening)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pump: asyncio.Task[None] | None = field(default=None, repr=False)
    restarts: bool = False  # it leaves on its own, and the demo starts it again

    async def wait_ready(self, timeout: float = STEP_TIMEOUT) -> None:  # noqa: ASYNC109
        """Until the program printed its ready line; DemoError if it exits or takes too long."""
        exited = asyncio.create_task(self.proc.wait())
        waiting = asyncio.create_task(self.ready.wait())
        try:
            done, _ = await asyncio.wait(
                {exited, waiting}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            exited.cancel()
            waiting.cancel()
        if waiting in done:
            return
        if exited in done:
            raise DemoError(f"{self.name} stopped while starting; its last lines are above")
        raise DemoError(f"{self.name} did not say {self.ready_text!r} within {timeout:g}s")


class Demo:
    def __init__(self, cfg: DemoConfig, plan: NetworkPlan | None = None) -> None:
        self.cfg = cfg
        self.charger, self.no_charger = find_charger(cfg.ocpp_charger)
        self.plan = with_freezing_city(plan or plan_network(cfg.cps, cfg.drivers))
        if self.charger is not None:
            self.plan = with_ocpp_charger(self.plan)
        self.weather = plan_weather(self.plan)
        self.children: list[Child] = []
        self.stopping = False
        self._halt = asyncio.Event()  # set by stop(): the charger is not started again
        self._keeper: asyncio.Task[None] | None = None
        self.seen: Counter[str] = Counter()  # TICKET / DENIED / CP busy lines of the drivers
        self._broker_start: asyncio.Future[str] | None = None
        self.broker = kafka_broker.BrokerConfig(
            host=cfg.host, port=cfg.kafka_port, data_dir=cfg.workdir / "kafka", heap="512m"
        )
        labels = ["EV_Central", "EV_Registry", "EV_OCPP", "EV_W", "EV_Front", "weather", "demo"]
        labels += ["kafka", *([charger_label(self.plan.ocpp)] if self.plan.ocpp else [])]
        labels += [f"{cp} {part}" for cp in self.plan.cps for part in ("engine", "monitor")]
        labels += [f"driver {d.driver_id}" for d in self.plan.drivers]
        self.label_width = max(len(label) for label in labels)
        self.width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None

    # --- output ---------------------------------------------------------------------------

    def say(self, text: str, label: str = "demo") -> None:
        """Rows in the merged form, wrapped to the terminal; the demo's own (its banner, its
        summaries) always within 80 columns, even when the output goes to a file."""
        width = self.width or (OWN_WIDTH if label == "demo" else None)
        for line in text.splitlines() or [""]:
            for row in render(label, line, self.label_width, width):
                sys.stdout.write(row + "\n")
        sys.stdout.flush()

    async def spawn(
        self,
        name: str,
        *argv: str,
        cp_id: str | None = None,
        ready: str | None = None,
        program: Path | None = None,
        env: dict[str, str] | None = None,
        restarts: bool = False,
    ) -> Child:
        """Start one program (ours from the venv, or `program`) in a session of its own, its
        output merged here and kept in logs/NAME.log (appended to, across restarts)."""
        logs = self.cfg.workdir / "logs"
        logs.mkdir(exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            str(program or BIN / argv[0]),
            *argv[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.cfg.workdir,
            env=env
            if env is not None
            else {"PYTHONUNBUFFERED": "1", "EV_UI": "plain", **_base_env()},
            start_new_session=True,
        )
        log_file = (logs / f"{name.replace(' ', '-')}.log").open("a", encoding="utf-8", buffering=1)
        child = Child(name, cp_id, proc, log_file, ready, restarts=restarts)
        child.pump = asyncio.create_task(self._pump(child))
        self.children.append(child)
        return child

    async def _pump(self, child: Child) -> None:
        assert child.proc.stdout is not None
        async for raw in child.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            child.log_file.write(line + "\n")
            self._count(line)
            if child.ready_text is not None and child.ready_text in line:
                child.ready.set()
            shown = compact(line, child.cp_id)
            if shown is not None:
                self.say(shown, child.name)
        child.log_file.close()
        code = await child.proc.wait()
        if not self.stopping and not child.restarts:
            self.say(f"{child.name} exited on its own (code {code}); its last lines are above")

    def _count(self, line: str) -> None:
        for marker in ("TICKET driver=", "DENIED driver=", "reason=CP busy"):
            if marker in line:
                self.seen[marker] += 1

    # --- the run --------------------------------------------------------------------------

    async def run(self) -> int:
        """0 after Ctrl+C or --for; 1 when a program fails to start; 2 when the broker cannot."""
        cfg = self.cfg
        if cfg.workdir.exists():
            shutil.rmtree(cfg.workdir)
        cfg.workdir.mkdir(parents=True)
        _log_as(self)
        if self.no_charger:
            self.say(self.no_charger)
        seed_file = (cfg.workdir / "network.yaml").resolve()
        seed_file.write_text(yaml.safe_dump(self.plan.seed, sort_keys=False), encoding="utf-8")
        # Ctrl+C, SIGTERM or a closed terminal (SIGHUP), at any time (also while starting): the
        # programs run in sessions of their own, so only the demo can stop them.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        # A thread cannot be cancelled: the broker's start is always awaited to its end (stop()).
        broker = asyncio.ensure_future(asyncio.to_thread(kafka_broker.start, self.broker))
        self._broker_start = broker
        work = asyncio.create_task(self._start_and_wait(broker, seed_file, stop))
        interrupted = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({work, interrupted}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                self.say("interrupted while starting")
                work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            error = None if work.cancelled() else work.exception()
            if error is None:
                return 0
            if isinstance(error, kafka_broker.BrokerError):
                self.say(f"cannot start the Kafka broker: {error}")
                return 2
            if isinstance(error, DemoError):
                self.say(f"cannot start the demo: {error}")
                return 1
            raise error
        finally:
            interrupted.cancel()
            await self.stop()

    async def _start_and_wait(
        self, broker: asyncio.Future[str], seed_file: Path, stop: asyncio.Event
    ) -> None:
        bootstrap = await asyncio.shield(broker)
        self.say(f"Kafka broker at {bootstrap}")
        await self._start_network(bootstrap, seed_file)
        await self._wait(stop)

    async def _start_network(self, kafka: str, seed_file: Path) -> None:
        cfg, plan = self.cfg, self.plan
        folder = cfg.workdir / "certs"
        await asyncio.to_thread(certs.init, folder, ips=[cfg.host])
        central = await self.spawn(
            "EV_Central",
            "EV_Central",
            str(cfg.central_port),
            kafka,
            "--db",
            "central.db",
            "--http-port",
            str(cfg.http_port),
            "--http-host",
            cfg.host,
            "--admin-token",
            cfg.admin_token,
            "--weather-token",
            cfg.weather_token,
            "--registry-url",
            f"https://{cfg.host}:{cfg.registry_port}",
            "--registry-ca-file",
            str((folder / "ca.pem").resolve()),
            "--seed",
            str(seed_file),
            "--ui",
            "plain",
            ready="HTTP API on",
        )
        await central.wait_ready()  # the database is migrated: the Registry shares it
        registry = await self.spawn(
            "EV_Registry",
            "EV_Registry",
            "--host",
            cfg.host,
            "--port",
            str(cfg.registry_port),
            "--db",
            "central.db",
            "--cert",
            str((folder / "server.pem").resolve()),
            "--key",
            str((folder / "server.key").resolve()),
            "--admin-token",
            cfg.admin_token,
            ready="EV_Registry on https://",
        )
        gateway = await self._start_gateway(kafka, folder)
        engines = []
        for i, cp in enumerate(plan.cps):
            link = f"{cfg.host}:{cfg.engine_base_port + i}"
            seconds = str(plan.supply_seconds[cp])
            engine = await self.spawn(
                f"{cp} engine",
                "EV_CP_E",
                kafka,
                link,
                "--auto-plug",
                "--supply-seconds",
                seconds,
                "--no-menu",
                cp_id=cp,
                ready="waiting for the Monitor on",
            )
            engines.append((cp, link, engine))
        # Monitors start once Central, the Registry and their Engine listen: no "cannot connect"
        # at start-up.  Each registers its CP over HTTPS, then authenticates with its credentials.
        await central.wait_ready()
        await registry.wait_ready()
        rows = {str(row["id"]): row for row in plan.cp_rows}
        for cp, link, engine in engines:
            await engine.wait_ready()
            await self.spawn(
                f"{cp} monitor",
                "EV_CP_M",
                link,
                f"{cfg.host}:{cfg.central_port}",
                cp,
                "--registry",
                f"https://{cfg.host}:{cfg.registry_port}",
                "--ca-file",
                str((folder / "ca.pem").resolve()),
                "--location",
                str(rows[cp]["location"]),
                "--price",
                str(rows[cp]["price_eur_per_kwh"]),
                "--register",
                "--auto-reauth",  # nobody at its keys: after "Revoke keys", back in 10 s
                "10",
                "--summary-every",
                str(cfg.summary_every),
                cp_id=cp,
            )
        if plan.ocpp is not None and self.charger is not None:
            await self._start_charger(plan.ocpp, self.charger, gateway, folder)
        await gateway.wait_ready()
        await asyncio.to_thread(self._wait_until_available, plan.cps)
        await self._start_weather_and_front()
        urls = []
        for i, driver in enumerate(plan.drivers):
            services = cfg.workdir / f"services-{driver.driver_id}.txt"
            services.write_text(driver.services_text(), encoding="utf-8")
            port = cfg.driver_web_base_port + i
            await self.spawn(
                f"driver {driver.driver_id}",
                "EV_Driver",
                kafka,
                driver.driver_id,
                "--file",
                services.name,
                "--no-menu",
                "--pause",
                str(PAUSE_SECONDS),
                "--web-port",
                str(port),
                "--web-host",
                cfg.host,
            )
            urls.append(
                f"  driver {driver.driver_id}:     http://{cfg.host}:{port}/ ({_few(driver.cps)})"
            )
        self.say(self._banner(urls))

    async def _start_gateway(self, kafka: str, folder: Path) -> Child:
        """EV_OCPP on wss:// with its own certificate from the demo's CA, accepting chargers'
        client certificates from that CA (OCPP security profile 3)."""
        cfg = self.cfg
        await asyncio.to_thread(certs.issue, folder, "ocpp", [cfg.host])
        work = cfg.workdir / "ocpp"
        return await self.spawn(
            "EV_OCPP",
            "EV_OCPP",
            kafka,
            f"{cfg.host}:{cfg.central_port}",
            "--listen",
            f"{cfg.host}:{cfg.ocpp_port}",
            "--tls-cert",
            str((folder / "ocpp.pem").resolve()),
            "--tls-key",
            str((folder / "ocpp.key").resolve()),
            "--client-ca",
            str((folder / "ca.pem").resolve()),
            "--credentials-dir",
            str((work / "credentials").resolve()),
            "--state-dir",
            str(work.resolve()),
            "--audit-file",
            str((work / "audit.jsonl").resolve()),
            ready="OCPP 1.6J central system at",
        )

    async def _start_charger(
        self, ocpp: OcppPlan, binary: Path, gateway: Child, folder: Path
    ) -> None:
        """Register the charger's CP at the Registry (as the Monitors do theirs), enrol its secret
        where EV_OCPP looks for it, give it a client certificate, and keep it running."""
        cfg = self.cfg
        registry = f"https://{cfg.host}:{cfg.registry_port}"
        enrolled = cfg.workdir / "ocpp" / "credentials" / f"cp-{ocpp.cp_id}.json"
        row = ocpp.cp_row
        try:
            client = RegistryClient(registry, (folder / "ca.pem").resolve())
            issued = await client.register(ocpp.cp_id, row["location"], row["price_eur_per_kwh"])
            stored = StoredCredentials(
                ocpp.cp_id, issued.secret, registry, issued.registered_at or ""
            )
            await asyncio.to_thread(credentials_file.save, enrolled, stored)
            files = await asyncio.to_thread(certs.issue_client, folder, ocpp.cp_id)
        except (RegistryError, certs.CertsError, OSError) as exc:
            self.say(f"no OCPP charger: {ocpp.cp_id} could not be enrolled: {exc}")
            return
        self.say(f"{ocpp.cp_id} registered at EV_Registry; its secret enrolled for EV_OCPP")
        env = charger_env(
            _base_env(),
            ocpp.cp_id,
            f"wss://{cfg.host}:{cfg.ocpp_port}",
            ca=(folder / "ca.pem").resolve(),
            cert=files.cert.resolve(),
            key=files.key.resolve(),
        )
        await gateway.wait_ready()
        self._keeper = asyncio.create_task(self._keep_charger(ocpp, binary, env))

    async def _keep_charger(self, ocpp: OcppPlan, binary: Path, env: dict[str, str]) -> None:
        """The charger runs one session, idles 5 minutes and leaves: start it again, until the
        demo stops (stop() sets `_halt`; a started charger is always in `children`)."""
        label = charger_label(ocpp)
        delay: float | None = None
        while not self.stopping:
            started = time.monotonic()
            try:
                child = await self.spawn(
                    label, binary.name, program=binary, env=env, cp_id=ocpp.cp_id, restarts=True
                )
            except OSError as exc:
                self.say(f"cannot start the OCPP charger {binary}: {exc}")
                return
            if not await self._unless_halted(child.proc.wait()):
                return
            if child.pump is not None:
                await asyncio.gather(child.pump, return_exceptions=True)
            self.children.remove(child)
            ran = time.monotonic() - started
            delay = restart_delay(ran, delay)
            self.say(
                f"{ocpp.cp_id}'s charger left after {ran:.0f} s (code {child.proc.returncode}); "
                f"again in {delay:g} s"
            )
            if not await self._unless_halted(asyncio.sleep(delay)):
                return

    async def _unless_halted(self, work: Coroutine[Any, Any, Any]) -> bool:
        """True when `work` ended; False (and `work` cancelled) when the demo stops first."""
        task = asyncio.ensure_future(work)
        halted = asyncio.create_task(self._halt.wait())
        try:
            await asyncio.wait({task, halted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            halted.cancel()
            if not task.done():
                task.cancel()
        return not self._halt.is_set()

    async def _start_weather_and_front(self) -> None:
        """The local weather service (one city freezing and thawing on a cycle), EV_W asking it
        for every CP's city, and the public front reading API_Central."""
        cfg, weather = self.cfg, self.weather
        work = cfg.workdir
        (work / "cities.yaml").write_text(weather.cities_text(), encoding="utf-8")
        (work / "locations.yaml").write_text(weather.locations_text(), encoding="utf-8")
        token = work / "weather.token"
        token.write_text(cfg.weather_token + "\n", encoding="utf-8")
        token.chmod(0o600)
        service = await self.spawn(
            "weather",
            "EV_WeatherService",
            "--host",
            cfg.host,
            "--port",
            str(cfg.weather_port),
            "--cities",
            "cities.yaml",
            "--cycle",
            weather.cycle,
            ready="EV_WeatherService on http://",
        )
        await service.wait_ready()
        await self.spawn(
            "EV_W",
            "EV_W",
            "--central",
            f"http://{cfg.host}:{cfg.http_port}",
            "--token-file",
            token.name,
            "--locations",
            "locations.yaml",
            "--provider",
            f"http://{cfg.host}:{cfg.weather_port}",
        )
        front = await self.spawn(
            "EV_Front",
            "EV_Front",
            "--central",
            f"http://{cfg.host}:{cfg.http_port}",
            "--host",
            cfg.host,
            "--port",
            str(cfg.front_port),
            ready="EV_Front on http://",
        )
        await front.wait_ready()

    def _banner(self, urls: list[str]) -> str:
        cfg, plan = self.cfg, self.plan
        low, high, seconds = FREEZING_CYCLE
        frozen = plan.cps[-1] if plan.cps else "no CP"
        lines = [
            f"EVCharging demo: {len(plan.cps)} charging points, {len(plan.drivers)} drivers.",
            f"  admin dashboard: http://{cfg.host}:{cfg.http_port}/",
            f"  admin token:     {cfg.admin_token}",
            f"  public front:    http://{cfg.host}:{cfg.front_port}/",
            f"  Central API:     http://{cfg.host}:{cfg.http_port}/docs",
            f"  EV_Registry:     https://{cfg.host}:{cfg.registry_port}/docs",
            f"  EV_OCPP:         wss://{cfg.host}:{cfg.ocpp_port}/<CP id> (OCPP 1.6J)",
            f"  OCPP charger:    {self._charger_words()}",
            *urls,
            f"  full logs:       {cfg.workdir}/logs/",
            f"  weather:         {FREEZING_CITY} {low:g} °C / {high:g} °C, turns every "
            f"{seconds // 2} s ({frozen})",
        ]
        if plan.shared:
            lines.append("More drivers than CPs: some share a CP and may find it busy.")
        until = f"for {cfg.duration:g}s" if cfg.duration else "until Ctrl+C"
        lines.append(f"Drivers keep charging {until}; a summary every {cfg.summary_every:g}s.")
        return "\n".join(lines)

    def _charger_words(self) -> str:
        ocpp = self.plan.ocpp
        if ocpp is None or self.charger is None:
            return "none (make ocpp-go-cp builds it; needs Go)"
        return f"{ocpp.cp_id}, ocpp-go's CP: a session every ~6 min"

    def _wait_until_available(self, ids: tuple[str, ...], timeout: float = STEP_TIMEOUT) -> None:
        """Drivers start once every CP of theirs has authenticated, so the first requests find
        them (the OCPP charger's CP is not waited for: it may be charging already)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = {str(cp["id"]): cp["state"] for cp in self._cps()}
            if all(states.get(cp) == CPState.ACTIVADO for cp in ids):
                return
            time.sleep(0.3)
        log.warning("not every CP is Activado after %ss; starting the drivers anyway", timeout)

    def _cps(self) -> list[dict[str, Any]]:
        """The CPs' states, from API_Central's public reads (nothing personal is needed here)."""
        url = f"http://{self.cfg.host}:{self.cfg.http_port}/api/v1/cps"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                found: list[dict[str, Any]] = json.loads(response.read())
        except (OSError, ValueError):
            return []
        return found

    def summary(self) -> str:
        """E.g. `14:03:05 UTC: 3 Suministrando, 2 Activado; 14 tickets, 0 denied`."""
        states = Counter(cp["state"] for cp in self._cps())
        cps = ", ".join(f"{n} {state}" for state, n in states.most_common()) or "CPs unknown"
        denied = self.seen["DENIED driver="]
        busy = self.seen["reason=CP busy"]
        return (
            f"{time.strftime('%H:%M:%S', time.gmtime())} UTC: "
            f"{cps}; {self.seen['TICKET driver=']} tickets, {denied} denied"
            + (f" ({busy} CP busy)" if busy else "")
        )

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.summary_every)
            self.say(await asyncio.to_thread(self.summary))

    async def _wait(self, stop: asyncio.Event) -> None:
        summaries = asyncio.create_task(self._summaries()) if self.cfg.summary_every > 0 else None
        try:
            await asyncio.wait_for(stop.wait(), timeout=self.cfg.duration)
        except TimeoutError:
            self.say(f"demo time ({self.cfg.duration:g}s) is over")
        finally:
            if summaries is not None:
                summaries.cancel()
        self.say(await asyncio.to_thread(self.summary))

    async def stop(self) -> None:
        """Drivers first (no new requests), then the CPs and the OCPP charger, then EV_OCPP, then
        Central and the rest, then the broker."""
        self.say("stopping every program the demo started")
        self.stopping = True
        self._halt.set()
        if self._keeper is not None:
            await asyncio.gather(self._keeper, return_exceptions=True)
        stages: list[list[Child]] = [[], [], [], []]
        for child in self.children:
            stages[_stage(child)].append(child)
        for group in stages:
            await asyncio.gather(*(self._end(child) for child in group))
        if self._broker_start is not None:
            await asyncio.gather(self._broker_start, return_exceptions=True)
            await asyncio.to_thread(kafka_broker.stop, self.broker)
        self.say("demo stopped: no program left running")

    async def _end(self, child: Child) -> None:
        if child.proc.returncode is None:
            child.proc.terminate()
        try:
            await asyncio.wait_for(child.proc.wait(), timeout=10)
        except TimeoutError:
            log.warning("%s did not stop in 10 s: killing it", child.name)
            child.proc.kill()
            await child.proc.wait()
        if child.pump is not None:
            await asyncio.gather(child.pump, return_exceptions=True)


def find_charger(binary: Path) -> tuple[Path | None, str]:
    """The OCPP charger's program (absolute: it runs in the work folder), or None and the one
    line that says why the demo runs without it."""
    if os.access(binary, os.X_OK) and binary.is_file():
        return binary.resolve(), ""
    return None, f"no OCPP charger: {binary} missing (make ocpp-go-cp)"  # the banner: why


def charger_label(ocpp: OcppPlan) -> str:
    return f"{ocpp.cp_id} Go CP"


def _stage(child: Child) -> int:
    """When stop() ends it: drivers, then CPs (and chargers), then EV_OCPP, then the rest."""
    if child.name.startswith("driver "):
        return 0
    if child.cp_id:
        return 1
    return 2 if child.name == "EV_OCPP" else 3


def _few(items: tuple[str, ...], shown: int = 3) -> str:
    if len(items) <= shown + 1:
        return ", ".join(items)
    return f"{', '.join(items[:shown])} +{len(items) - shown} more"


class _DemoLines(logging.Handler):
    """The demo's own log lines (and the broker helper's) in the merged `label | message` form."""

    def __init__(self, demo: Demo) -> None:
        super().__init__()
        self.demo = demo

    def emit(self, record: logging.LogRecord) -> None:
        label = "kafka" if record.name.endswith("kafka_broker") else "demo"
        level = {"WARNING": "warning: ", "ERROR": "error: "}.get(record.levelname, "")
        self.demo.say(level + record.getMessage(), label)


def _log_as(demo: Demo) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_DemoLines(demo))


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EV_")}
