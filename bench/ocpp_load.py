"""OCPP load generator: N charge points speaking OCPP 1.6J to one EV_OCPP, in worker processes.

Each simulated charger is what the issue names: a `websockets` client (subprotocol `ocpp1.6`,
HTTP Basic `CP_ID:secret`, security profile 1) with the PyPI `ocpp` package's
`ocpp.v16.ChargePoint` on it. Its session: BootNotification, StatusNotification Available,
Authorize(its driver), StartTransaction, StatusNotification Charging, then MeterValues every
second (Energy.Active.Import.Register in Wh, growing), each CALL awaiting its CALLRESULT as OCPP
says (one CALL in flight per direction), until `end`: StopTransaction and close.

The boots are the expensive part of the gateway's day (each is a login at Central: one scrypt
stretch of the charger's secret at the gateway), so they are let in `boot_concurrency` at a
time. The hot path (MeterValues) skips the client-side schema validation
(`skip_schema_validation`): the gateway validates what it receives, and the generator shares the
machine with it. Readings are spread evenly over the second (CP i at i/N s).

Run as `python -m bench.ocpp_load --spec FILE`, driven over stdin/stdout by
`bench.loadgen.Workers` (the same JSON-lines protocol as `bench.loadgen`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import struct
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.loadgen import CpSpec
from bench.stats import summary_ms
from evcharging.apps.common import loop_factory

log = logging.getLogger(__name__)

TIMESTAMP = "2026-12-02T00:00:00Z"  # the chargers' clock is not what is measured
BOOT_TRIES = 6  # a Pending (Central slow to answer the login) is retried
RESPONSE_TIMEOUT = 30.0  # the client's wait for a CALLRESULT: an answer later than 1 s fails


@dataclass(frozen=True)
class OcppLoadConfig:
    url: str  # ws://host:port (the CP id is appended)
    secret: str  # every bench CP's secret (`harness.issue_credentials`)
    meter_start_wh: int = 1000
    wh_per_reading: int = 3  # ~11 kW: 3 Wh a second
    boot_concurrency: int = 4
    retry_s: float = 1.0  # wait before booting again after Pending/Rejected
    total: int = 1  # CPs in the whole run (all workers): the readings' spread over the second


class BenchCharger(ChargePoint):
    """A charger that accepts what the central system asks (nothing is asked in the bench)."""

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, transaction_id: int) -> call_result.RemoteStopTransaction:
        return call_result.RemoteStopTransaction(status="Accepted")

    @on(Action.change_availability)
    def on_change_availability(
        self, connector_id: int, type: str
    ) -> call_result.ChangeAvailability:
        return call_result.ChangeAvailability(status="Accepted")


@dataclass(eq=False)
class Sim:
    spec: CpSpec
    ws: ClientConnection | None = None
    cp: BenchCharger | None = None
    reader: asyncio.Task[None] | None = None
    transaction_id: int | None = None
    register_wh: int = 0
    supplying: bool = False
    failed: str = ""


@dataclass
class Figures:
    boots: Counter[str] = field(default_factory=Counter)  # Accepted / Pending / Rejected
    failures: Counter[str] = field(default_factory=Counter)
    sent: int = 0  # MeterValues CALLs
    answered: int = 0  # ... with their CALLRESULT
    errors: Counter[str] = field(default_factory=Counter)  # CALLERROR, timeout, closed
    late: int = 0  # a reading sent more than 1 s after it was due (the previous one was slow)
    closed: int = 0  # connections the gateway closed while supplying


class OcppLoad:
    """The simulated chargers of one worker, on one loop."""

    def __init__(self, cfg: OcppLoadConfig, cps: list[CpSpec]) -> None:
        self.cfg = cfg
        self.sims = [Sim(spec, register_wh=cfg.meter_start_wh) for spec in cps]
        self.total = max(cfg.total, 1)
        self.fig = Figures()
        self.recording = False
        self.sent_cp, self.sent_wh, self.sent_t = array("i"), array("i"), array("d")
        self.rtt_s: array[float] = array("d")
        self.window = Counter[str]()  # MeterValues sent/answered while recording
        self._meters: list[asyncio.Task[None]] = []
        self._t0 = 0.0

    # --- the ramp: connect, boot, authorise, start ------------------------------------------

    async def connect(self) -> dict[str, Any]:
        t0 = time.monotonic()
        gate = asyncio.Semaphore(self.cfg.boot_concurrency)
        await asyncio.gather(*(self._session_start(sim, gate) for sim in self.sims))
        supplying = sum(1 for sim in self.sims if sim.supplying)
        return {
            "supplying": supplying,
            "ramp_s": round(time.monotonic() - t0, 1),
            "boots": dict(self.fig.boots),
            "failures": dict(self.fig.failures),
            "failed_examples": [f"{s.spec.cp_id}: {s.failed}" for s in self.sims if s.failed][:5],
        }

    async def _session_start(self, sim: Sim, gate: asyncio.Semaphore) -> None:
        try:
            async with gate:
                await self._open(sim)
                await self._boot(sim)
            await self._start(sim)
        except (OSError, OCPPError, ConnectionClosed, InvalidStatus, TimeoutError) as exc:
            sim.failed = f"{type(exc).__name__}: {exc}"[:200]
            self.fig.failures[type(exc).__name__] += 1

    async def _open(self, sim: Sim) -> None:
        cp_id = sim.spec.cp_id
        token = base64.b64encode(f"{cp_id}:{self.cfg.secret}".encode()).decode()
        sim.ws = await connect(
            f"{self.cfg.url}/{cp_id}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Basic {token}"},
            ping_interval=None,  # the gateway pings every charger; one side is enough
            open_timeout=60,
        )
        sim.cp = BenchCharger(cp_id, sim.ws, response_timeout=RESPONSE_TIMEOUT)
        sim.reader = asyncio.create_task(self._read(sim), name=f"reader {cp_id}")

    async def _read(self, sim: Sim) -> None:
        assert sim.cp is not None
        with contextlib.suppress(ConnectionClosed):
            await sim.cp.start()
        if sim.supplying:
            self.fig.closed += 1
            sim.supplying = False

    async def _boot(self, sim: Sim) -> None:
        assert sim.cp is not None
        boot = call.BootNotification(charge_point_model="bench", charge_point_vendor="ocppbench")
        for _ in range(BOOT_TRIES):
            answer = await sim.cp.call(boot, suppress=False)
            self.fig.boots[answer.status] += 1
            if answer.status == "Accepted":
                return
            await asyncio.sleep(self.cfg.retry_s)
        raise TimeoutError(f"boot not accepted after {BOOT_TRIES} tries")

    async def _start(self, sim: Sim) -> None:
        cp, driver = sim.cp, sim.spec.driver_id
        assert cp is not None
        await cp.call(
            call.StatusNotification(connector_id=1, error_code="NoError", status="Available"),
            suppress=False,
        )
        auth = await cp.call(call.Authorize(id_tag=driver), suppress=False)
        if auth.id_tag_info["status"] != "Accepted":
            raise OCPPError(f"Authorize {auth.id_tag_info['status']}")
        start = await cp.call(
            call.StartTransaction(
                connector_id=1,
                id_tag=driver,
                meter_start=self.cfg.meter_start_wh,
                timestamp=TIMESTAMP,
            ),
            suppress=False,
        )
        if start.id_tag_info["status"] != "Accepted":
            raise OCPPError(f"StartTransaction {start.id_tag_info['status']}")
        sim.transaction_id = start.transaction_id
        await cp.call(
            call.StatusNotification(connector_id=1, error_code="NoError", status="Charging"),
            suppress=False,
        )
        sim.supplying = True

    # --- steady state: MeterValues every second ---------------------------------------------

    def start_meters(self) -> None:
        loop = asyncio.get_running_loop()
        self._t0 = loop.time() + 0.5
        self._meters = [
            asyncio.create_task(self._meter(sim), name=f"meter {sim.spec.cp_id}")
            for sim in self.sims
            if sim.supplying
        ]

    async def _meter(self, sim: Sim) -> None:
        loop = asyncio.get_running_loop()
        cp, tx = sim.cp, sim.transaction_id
        assert cp is not None
        due = self._t0 + sim.spec.index / self.total
        fig, step = self.fig, self.cfg.wh_per_reading
        while sim.supplying:
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -1.0:
                fig.late += 1
                due = loop.time()  # the pace resumes from now: no burst to catch up
            sim.register_wh += step
            payload = call.MeterValues(
                connector_id=1,
                transaction_id=tx,
                meter_value=[
                    {
                        "timestamp": TIMESTAMP,
                        "sampledValue": [
                            {
                                "value": str(sim.register_wh),
                                "measurand": "Energy.Active.Import.Register",
                                "unit": "Wh",
                            }
                        ],
                    }
                ],
            )
            recording, sent_at, t0 = self.recording, time.time(), time.perf_counter()
            fig.sent += 1
            if recording:
                self.window["sent"] += 1
                self.sent_cp.append(sim.spec.index)
                self.sent_wh.append(sim.register_wh - self.cfg.meter_start_wh)
                self.sent_t.append(sent_at)
            try:
                await cp.call(payload, suppress=False, skip_schema_validation=True)
            except (OCPPError, TimeoutError, ConnectionClosed) as exc:
                fig.errors[type(exc).__name__] += 1
                if recording:
                    self.window["unanswered"] += 1
                if isinstance(exc, ConnectionClosed):
                    return
            else:
                fig.answered += 1
                if recording:
                    self.window["answered"] += 1
                    self.rtt_s.append(time.perf_counter() - t0)
            due += 1.0

    def mark(self) -> None:
        self.recording = True

    async def stop_recording(self, dump: Path) -> dict[str, Any]:
        """The window ends: its readings still in flight are waited for (up to the CALL
        timeout), so a slow answer counts, and a missing one is counted as such."""
        self.recording = False
        deadline = time.monotonic() + RESPONSE_TIMEOUT + 1
        w = self.window
        while time.monotonic() < deadline:
            if w["answered"] + w["unanswered"] >= w["sent"]:
                break
            await asyncio.sleep(0.05)
        n = len(self.sent_cp)
        with dump.open("wb") as out:  # bench.loadgen.load_sent reads it
            out.write(struct.pack("<q", n))
            self.sent_cp.tofile(out)
            self.sent_wh.tofile(out)
            self.sent_t.tofile(out)
        return {"sent": n, "rtt_ms": [round(v * 1000, 2) for v in self.rtt_s]}

    # --- the end: StopTransaction, close ----------------------------------------------------

    async def end(self) -> dict[str, Any]:
        supplying = [sim for sim in self.sims if sim.supplying]
        for sim in self.sims:
            sim.supplying = False
        for task in self._meters:  # each stops after its CALL under way
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), RESPONSE_TIMEOUT)
        gate = asyncio.Semaphore(50)
        stopped = Counter[str]()

        async def stop(sim: Sim) -> None:
            assert sim.cp is not None
            assert sim.transaction_id is not None
            async with gate:
                try:
                    await sim.cp.call(
                        call.StopTransaction(
                            meter_stop=sim.register_wh + 100,
                            timestamp=TIMESTAMP,
                            transaction_id=sim.transaction_id,
                            reason="EVDisconnected",
                        ),
                        suppress=False,
                    )
                    stopped["stopped"] += 1
                except (OCPPError, TimeoutError, ConnectionClosed) as exc:
                    stopped[type(exc).__name__] += 1

        await asyncio.gather(*(stop(sim) for sim in supplying))
        return dict(stopped)

    async def close(self) -> None:
        for sim in self.sims:
            sim.supplying = False
            if sim.ws is not None:
                with contextlib.suppress(OSError, ConnectionClosed):
                    await sim.ws.close()
        tasks = [t for t in [*self._meters, *(s.reader for s in self.sims)] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def figures(self) -> dict[str, Any]:
        f = self.fig
        return {
            "cps": len(self.sims),
            "supplying": sum(1 for sim in self.sims if sim.supplying),
            "meter_values_sent": f.sent,
            "meter_values_answered": f.answered,
            "meter_values_errors": dict(f.errors),
            "late_readings": f.late,
            "closed_by_gateway": f.closed,
            "window": dict(self.window),
            "rtt": summary_ms(self.rtt_s),
        }


# --- the worker process -------------------------------------------------------------------------


class Worker:
    def __init__(self, load: OcppLoad, dump: Path) -> None:
        self.load = load
        self.dump = dump

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        load, op = self.load, cmd["op"]
        if op == "start":
            return {}
        if op == "connect":
            return await load.connect()
        if op == "meters":
            load.start_meters()
            return {}
        if op == "mark":
            load.mark()
            return {}
        if op == "stop_recording":
            return await load.stop_recording(self.dump)
        if op == "figures":
            return load.figures()
        if op == "end":
            return {"stopped": await load.end()}
        raise ValueError(f"unknown op {op!r}")


async def _serve_stdin(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                break
            try:
                reply: dict[str, Any] = {"ok": True, **await worker.handle(cmd)}
            except (ValueError, KeyError, OSError, TimeoutError) as exc:
                log.exception("ocpp load worker: %s failed", cmd.get("op"))
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        await worker.load.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ocpp_load", description=__doc__)
    p.add_argument("--spec", type=Path, required=True, help="JSON: config, cps, dump file")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s ocpp-load %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("ocpp").setLevel(logging.WARNING)  # a line per frame otherwise
    spec = json.loads(args.spec.read_text(encoding="utf-8"))
    load = OcppLoad(OcppLoadConfig(**spec["config"]), [CpSpec(**c) for c in spec["cps"]])
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve_stdin(Worker(load, Path(spec["dump"]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
