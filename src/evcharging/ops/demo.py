"""`evcharging demo`: a whole network on this machine, unattended, until Ctrl+C (or --for).

It starts the Kafka broker, EV_Central with the sample data, N charging points (Monitor + Engine,
plugging in when authorised and unplugging after a while) and M drivers each running a services
file, prefixes every program's output with its name, and stops everything it started on exit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from evcharging.ops import kafka_broker

log = logging.getLogger(__name__)

BIN = Path(sys.executable).parent
SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample_network.yaml"
CITIES = ("Alicante", "Valencia", "Madrid", "Barcelona", "Murcia", "Sevilla")


@dataclass
class DemoConfig:
    cps: int = 5
    drivers: int = 3
    duration: float | None = None
    host: str = "127.0.0.1"
    kafka_port: int = 9092
    central_port: int = 7000
    http_port: int = 8000
    engine_base_port: int = 7100
    driver_web_base_port: int = 8100
    admin_token: str = "demo-admin"
    workdir: Path = Path(".run/demo")
    services_per_driver: int = 12


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    pump: asyncio.Task[None] | None = field(default=None, repr=False)


def network_data(cps: int, drivers: int) -> tuple[dict[str, object], list[str], list[str]]:
    """The sample network, grown with generated CPs and drivers when more are asked for."""
    data = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    cp_rows, driver_rows = list(data["charging_points"]), list(data["drivers"])
    for i in range(len(cp_rows), cps):
        city = CITIES[i % len(CITIES)]
        cp_rows.append(
            {
                "id": f"CP{i + 1:03d}",
                "location": f"{city} - Demo {i + 1}",
                "price_eur_per_kwh": "0.40",
            }
        )
    for i in range(len(driver_rows), drivers):
        driver_rows.append(
            {"id": f"D{i + 1:03d}", "name": f"Driver {i + 1}", "balance_eur": "100.00"}
        )
    funded = [d for d in driver_rows if str(d["balance_eur"]) not in ("0", "0.00")]
    seed: dict[str, object] = {"charging_points": cp_rows, "drivers": driver_rows}
    return seed, [str(c["id"]) for c in cp_rows[:cps]], [str(d["id"]) for d in funded[:drivers]]


class Demo:
    def __init__(self, cfg: DemoConfig) -> None:
        self.cfg = cfg
        self.children: list[Child] = []
        self.stopping = False
        self.broker = kafka_broker.BrokerConfig(
            host=cfg.host, port=cfg.kafka_port, data_dir=cfg.workdir / "kafka", heap="512m"
        )

    async def spawn(self, name: str, *argv: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / argv[0]),
            *argv[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.cfg.workdir,
            env={"PYTHONUNBUFFERED": "1", "EV_UI": "plain", **_base_env()},
            start_new_session=True,
        )
        child = Child(name, proc)
        child.pump = asyncio.create_task(self._pump(child))
        self.children.append(child)
        return child

    async def _pump(self, child: Child) -> None:
        assert child.proc.stdout is not None
        width = max(len(c.name) for c in self.children) if self.children else len(child.name)
        async for raw in child.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            sys.stdout.write(f"[{child.name:<{max(width, 14)}}] {line}\n")
            sys.stdout.flush()
        code = await child.proc.wait()
        if not self.stopping:
            _say(f"{child.name} exited on its own (code {code}); its last lines are above")

    async def run(self) -> int:
        cfg = self.cfg
        if cfg.workdir.exists():
            shutil.rmtree(cfg.workdir)
        cfg.workdir.mkdir(parents=True)
        seed, cps, drivers = network_data(cfg.cps, cfg.drivers)
        seed_file = (cfg.workdir / "network.yaml").resolve()
        seed_file.write_text(yaml.safe_dump(seed, sort_keys=False), encoding="utf-8")
        bootstrap = await asyncio.to_thread(kafka_broker.start, self.broker)
        _say(f"Kafka broker at {bootstrap}")
        try:
            await self._start_network(bootstrap, seed_file, cps, drivers)
            await self._wait()
        finally:
            await self.stop()
        return 0

    async def _start_network(
        self, kafka: str, seed_file: Path, cps: list[str], drivers: list[str]
    ) -> None:
        cfg = self.cfg
        await self.spawn(
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
            "--seed",
            str(seed_file),
            "--ui",
            "plain",
        )
        rng = random.Random(7)
        for i, cp in enumerate(cps):
            link = f"{cfg.host}:{cfg.engine_base_port + i}"
            seconds = str(rng.randint(6, 12))
            await self.spawn(
                f"{cp} engine",
                "EV_CP_E",
                kafka,
                link,
                "--auto-plug",
                "--supply-seconds",
                seconds,
                "--no-menu",
            )
            await self.spawn(f"{cp} monitor", "EV_CP_M", link, f"{cfg.host}:{cfg.central_port}", cp)
        await asyncio.to_thread(self._wait_until_available, len(cps))
        files = await asyncio.to_thread(self._services_files, cps, drivers)
        urls = []
        for i, (driver, services) in enumerate(zip(drivers, files, strict=True)):
            port = cfg.driver_web_base_port + i
            await self.spawn(
                f"driver {driver}",
                "EV_Driver",
                kafka,
                driver,
                "--file",
                services.name,
                "--no-menu",
                "--web-port",
                str(port),
                "--web-host",
                cfg.host,
            )
            urls.append(f"  driver {driver} dashboard: http://{cfg.host}:{port}/")
        _say(
            "\n".join(
                [
                    "EVCharging demo running: "
                    f"{len(cps)} charging points, {len(drivers)} drivers. Ctrl+C stops everything.",
                    f"  admin dashboard:  http://{cfg.host}:{cfg.http_port}/   (admin token: {cfg.admin_token})",
                    f"  Central API:      http://{cfg.host}:{cfg.http_port}/api/cps  (OpenAPI at /docs)",
                    *urls,
                ]
            )
        )

    def _services_files(self, cps: list[str], drivers: list[str]) -> list[Path]:
        files = []
        for i, driver in enumerate(drivers):
            services = self.cfg.workdir / f"services-{driver}.txt"
            picks = [cps[(i + k) % len(cps)] for k in range(self.cfg.services_per_driver)]
            services.write_text("\n".join(picks) + "\n", encoding="utf-8")
            files.append(services)
        return files

    def _wait_until_available(self, count: int, timeout: float = 60.0) -> None:
        """Drivers start once the CPs have authenticated, so the first requests find them."""
        url = f"http://{self.cfg.host}:{self.cfg.http_port}/api/cps"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    cps = json.loads(response.read())
            except OSError:
                cps = []
            if sum(1 for cp in cps if cp["state"] == "Activado") >= count:
                return
            time.sleep(0.3)
        log.warning("not every CP is Activado after %ss; starting the drivers anyway", timeout)

    async def _wait(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await asyncio.wait_for(stop.wait(), timeout=self.cfg.duration)
        except TimeoutError:
            _say(f"demo time ({self.cfg.duration:g}s) is over")

    async def stop(self) -> None:
        _say("stopping every program the demo started")
        self.stopping = True
        for child in reversed(self.children):
            if child.proc.returncode is None:
                child.proc.terminate()
        for child in self.children:
            try:
                await asyncio.wait_for(child.proc.wait(), timeout=10)
            except TimeoutError:
                log.warning("%s did not stop in 10 s: killing it", child.name)
                child.proc.kill()
                await child.proc.wait()
            if child.pump is not None:
                await asyncio.gather(child.pump, return_exceptions=True)
        await asyncio.to_thread(kafka_broker.stop, self.broker)
        _say("demo stopped: no program left running")


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("EV_")}


def _say(text: str) -> None:
    sys.stdout.write(f"[{'demo':<14}] " + text.replace("\n", f"\n[{'demo':<14}] ") + "\n")
    sys.stdout.flush()
