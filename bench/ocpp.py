"""OCPP gateway (issue 16): how many OCPP 1.6J chargers at one MeterValues a second one EV_OCPP
process holds on this machine, and its CPU per message.

One run per N, each against a fresh EV_Central and a fresh EV_OCPP (real programs, real broker):
1. Central starts with N CPs (registered, one bench secret: `harness.issue_credentials`) and N
   drivers; EV_OCPP starts against it; its RSS with no charger.
2. The load generator (`bench/ocpp_load.py`, its own process) connects N chargers with the PyPI
   `ocpp` package, `boot_concurrency` boots at a time (each is a login at Central: one scrypt at
   the gateway), and each authorises its driver and starts a transaction; then every CP must
   show Suministrando on Central's admin WebSocket. The gateway's RSS again (per CP).
3. Heartbeats only (`idle_s`): the gateway's CPU with every CP supplying but no MeterValues yet,
   i.e. its per-CP cost that is not the readings (one Monitor heartbeat a second to Central per
   CP, with its answer; WebSocket pings every 10 s).
4. MeterValues every second from every charger; warm-up, then the steady window: each
   CALL -> CALLRESULT round trip (at the charger), each reading's end-to-end lag (sent ->
   Central's admin WebSocket shows that energy, or a later one: `bench/observer.py`, as the
   telemetry benchmark), the gateway's CPU (/proc utime+stime) and RSS, everyone else's CPU.
5. Every charger sends StopTransaction; the sessions must end at Central.

A run holds when, through the steady window: every CP supplied (Suministrando), p99 of the
end-to-end lag < 1 s, every MeterValues of the window answered, no CP wrongly Desconectado and
the gateway alive. The stops at the end (every charger within seconds, a mass stop) are reported
apart: the CPs shown Desconectado meanwhile. The sweep stops after the first N that fails (or when
the time budget of `python -m bench` runs out).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.support.ports import free_port

from bench.context import Context, cp_specs, running_central
from bench.harness import (
    ADMIN_TOKEN,
    BENCH_SECRET,
    BIN,
    RESULTS,
    Central,
    CpuWatch,
    Network,
    command_line,
    cpu_seconds,
    rss_kb,
    utc_now,
    write_result,
)
from bench.loadgen import Workers
from bench.observer import Dashboard
from bench.ocpp_load import OcppLoadConfig
from bench.profile import Profiler
from bench.stats import summary_ms, telemetry_latencies

log = logging.getLogger(__name__)

SWEEP = (100, 250, 500, 1000, 1500, 2000, 3000)
QUICK_SWEEP = (20,)
LAG_LIMIT_S = 1.0
READY_LINE = "OCPP 1.6J central system at"


@dataclass(frozen=True)
class OcppParams:
    sizes: tuple[int, ...] = SWEEP
    steady_s: float = 20.0
    warmup_s: float = 5.0
    idle_s: float = 5.0  # heartbeats only, before the readings start
    boot_concurrency: int = 4  # the gateway's scrypt threads share 2 cores (see the docs)
    workers: int = 0  # 0: one up to 2,000 chargers, two above
    profile: bool = False  # py-spy records the gateway during the steady window

    @classmethod
    def quick(cls) -> OcppParams:
        return cls(sizes=QUICK_SWEEP, steady_s=5.0, warmup_s=2.0, idle_s=2.0)

    def workers_for(self, n: int) -> int:
        return self.workers or (2 if n > 2000 else 1)


@dataclass
class Run:
    n: int
    command: str
    date: str = field(default_factory=utc_now)
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "holds": self.holds,
            "failures": self.failures,
            "command": self.command,
            "date": self.date,
            **self.figures,
        }


def estimated_s(n: int, params: OcppParams) -> float:
    """A pessimistic length of one run: start-up (40 s), the boots (a scrypt each, ~0.15 s of a
    core here), the windows, the end."""
    return 40 + n * 0.15 + params.idle_s + params.warmup_s + params.steady_s + 30 + n / 100


# --- EV_OCPP as a process -----------------------------------------------------------------------


@dataclass
class Gateway:
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path
    stop_s: float | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_counts(self) -> dict[str, int]:
        text = self.output()
        return {
            "errors": text.count(" ERROR "),
            "warnings": text.count(" WARNING "),
            "tracebacks": text.count("Traceback"),
            "boots_pending": text.count("boot Pending"),
            "boots_rejected": text.count("boot Rejected"),
        }

    async def wait_ready(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while READY_LINE not in self.output():
            if not self.alive or time.monotonic() > deadline:
                raise RuntimeError(f"EV_OCPP did not start:\n{self.output()[-3000:]}")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        if not self.alive:
            return
        t0 = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log.warning("EV_OCPP pid=%s ignored SIGTERM for 30 s; killing it", self.pid)
            self.popen.kill()
            self.popen.wait(timeout=10)
        self.stop_s = round(time.monotonic() - t0, 1)


def start_gateway(kafka: str, central: Central, workdir: Path, name: str) -> Gateway:
    port = free_port()
    state = workdir / f"{name}-state"
    argv = [
        str(BIN / "EV_OCPP"),
        kafka,
        f"127.0.0.1:{central.port}",
        "--listen",
        f"127.0.0.1:{port}",
        "--name",
        f"bench-{name}-{os.getpid()}-{int(time.time())}",
        "--state-dir",
        str(state),
        "--audit-file",
        str(state / "audit.jsonl"),
        "--retry-interval",
        "1",
    ]
    log_path = workdir / f"{name}-gateway.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "EV_LOG_LEVEL": "INFO"}
    with log_path.open("ab") as out:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    log.info("started EV_OCPP pid=%s (%s), log %s", popen.pid, name, log_path)
    return Gateway(popen, port, log_path)


# --- the sweep ----------------------------------------------------------------------------------


async def sweep(ctx: Context, params: OcppParams) -> dict[str, Any]:
    runs: list[Run] = []
    stopped = ""
    for n in params.sizes:
        if ctx.remaining < estimated_s(n, params):
            stopped = f"N = {n:,} not run: only {ctx.remaining:.0f} s of the time budget left"
            log.warning("%s", stopped)
            break
        try:
            run = await measure(ctx, n, params)
        except (RuntimeError, TimeoutError, OSError) as exc:
            log.exception("ocpp N=%d could not be measured", n)
            run = Run(n, command_line(), failures=[f"not measured: {type(exc).__name__}: {exc}"])
        runs.append(run)
        log_run(run)
        if not run.holds:
            stopped = f"Stopped after N = {n:,}, which fails"
            break
    return save(runs, params, stopped)


def log_run(run: Run) -> None:
    f = run.figures
    log.info(
        "ocpp N=%d %s: gateway %s%% CPU, %s µs/MeterValues, RTT p99 %s ms, lag p99 %s ms %s",
        run.n,
        "holds" if run.holds else "FAILS",
        f.get("gateway_cpu_pct"),
        f.get("gateway_cpu_us_per_meter_values"),
        (f.get("call_to_result") or {}).get("p99_ms"),
        (f.get("meter_values_to_screen") or {}).get("p99_ms"),
        "; ".join(run.failures),
    )


async def measure(ctx: Context, n: int, params: OcppParams) -> Run:
    """One run at N against a fresh Central and a fresh EV_OCPP."""
    run = Run(n, command_line())
    ctx = replace(ctx, encryption=True)  # the gateway needs Central's key grants
    net = Network("OC", n)
    name = f"ocpp-{n}"
    log.info("ocpp N=%d: starting Central", n)
    async with running_central(ctx, net, name) as central:
        gateway = start_gateway(ctx.kafka, central, ctx.workdir, name)
        dashboard = Dashboard(central.ws_url, net.cp_ids, ADMIN_TOKEN)
        cfg = OcppLoadConfig(
            url=gateway.url,
            secret=BENCH_SECRET,
            boot_concurrency=params.boot_concurrency,
            total=n,
        )
        workers = Workers(
            cfg, cp_specs(net), params.workers_for(n), ctx.workdir, module="bench.ocpp_load"
        )
        try:
            await gateway.wait_ready()
            await asyncio.sleep(1.0)
            run.figures["gateway_rss_empty_mb"] = round(rss_kb(gateway.pid) / 1024, 1)
            await dashboard.start()
            await workers.start()
            await _phases(ctx, central, gateway, workers, dashboard, n, params, run)
        finally:
            await workers.close()
            await dashboard.close()
            run.figures["gateway_alive_at_end"] = gateway.alive
            gateway.stop()
            run.figures["gateway_stop_s"] = gateway.stop_s
            run.figures["gateway_log"] = gateway.log_counts()
            run.figures["central_log"] = central.log_counts()
    return run


async def _phases(
    ctx: Context,
    central: Central,
    gateway: Gateway,
    workers: Workers,
    dashboard: Dashboard,
    n: int,
    params: OcppParams,
    run: Run,
) -> None:
    f = run.figures
    f["loadgen_workers"] = len(workers.pids)
    t0 = time.monotonic()
    ramp = await workers.call("connect", within=120 + n * 1.0)
    f["supplying"] = sum(r["supplying"] for r in ramp)
    f["boots"] = _merge([r["boots"] for r in ramp])
    f["ramp_failures"] = _merge([r["failures"] for r in ramp])
    f["ramp_failed_examples"] = [x for r in ramp for x in r["failed_examples"]][:5]
    on_screen = await dashboard.wait_count("Suministrando", f["supplying"], within=60)
    f["ramp_s"] = round(time.monotonic() - t0, 1)
    f["boots_per_s"] = round(f["supplying"] / max(f["ramp_s"], 0.1), 1)
    f["suministrando_after_ramp"] = dashboard.counts["Suministrando"]
    if f["supplying"] < n or not on_screen:
        run.failures.append(
            f"ramp incomplete: {f['supplying']} of {n} chargers supplying, "
            f"{dashboard.counts['Suministrando']} shown Suministrando"
        )  # measured all the same, with the chargers that do supply: the figures say why
        if f["supplying"] == 0:
            return
    dashboard.watch_disconnects = True
    await asyncio.sleep(3.0)  # Central's backlog of the ramp
    rss = rss_kb(gateway.pid)
    f["gateway_rss_supplying_mb"] = round(rss / 1024, 1)
    f["gateway_rss_per_cp_kb"] = round((rss / 1024 - f["gateway_rss_empty_mb"]) * 1024 / n, 1)
    c0, w0 = cpu_seconds(gateway.pid), time.monotonic()
    await asyncio.sleep(params.idle_s)
    idle_cpu = cpu_seconds(gateway.pid) - c0
    f["gateway_idle_cpu_pct"] = round(100 * idle_cpu / (time.monotonic() - w0), 1)
    f["gateway_idle_cpu_us_per_cp_s"] = round(1e6 * idle_cpu / (time.monotonic() - w0) / n, 1)
    await workers.call("meters", within=30)
    await asyncio.sleep(params.warmup_s)
    await _steady(ctx, central, gateway, workers, dashboard, n, params, run)
    f["suministrando_at_end"] = dashboard.counts["Suministrando"]
    _judge(run, dashboard, gateway, n)
    dashboard.wrongly_disconnected.clear()  # the stops are not the steady state: said apart
    t1 = time.monotonic()
    ends = await workers.call("end", within=120 + n / 10)
    f["stop_transactions"] = _merge([e["stopped"] for e in ends])
    f["sessions_ended"] = await dashboard.wait_no_sessions(within=max(30.0, n / 50))
    f["end_all_s"] = round(time.monotonic() - t1, 1)
    f["stop_transactions_per_s"] = round(n / max(f["end_all_s"], 0.1), 1)
    f["desconectado_during_stops"] = len(dashboard.wrongly_disconnected)


async def _steady(
    ctx: Context,
    central: Central,
    gateway: Gateway,
    workers: Workers,
    dashboard: Dashboard,
    n: int,
    params: OcppParams,
    run: Run,
) -> None:
    f = run.figures
    pids = {
        "gateway": gateway.pid,
        "central": central.pid,
        "broker": ctx.broker_pid,
        "observer": os.getpid(),
    }
    cpu = CpuWatch(pids | {f"loadgen{k}": pid for k, pid in enumerate(workers.pids)})
    profiler = None
    if params.profile:
        RESULTS.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(gateway.pid, RESULTS / f"profile-ocpp-gateway-n{n}.folded")
    dashboard.recording = True
    await workers.call("mark", within=10)
    cpu.start()
    g0 = cpu_seconds(gateway.pid)
    if profiler is not None:
        profiler.start()
    rss: list[int] = []
    deadline = time.monotonic() + params.steady_s
    while time.monotonic() < deadline:
        rss.append(rss_kb(gateway.pid))
        await asyncio.sleep(0.5)
    usage = cpu.stop()
    gateway_cpu_s = cpu_seconds(gateway.pid) - g0
    recorded = await workers.call("stop_recording", within=60)
    if profiler is not None:
        f["profile"] = profiler.stop()
    await asyncio.sleep(3.0)  # the last readings' way to the screen
    dashboard.recording = False
    f.update(usage)
    f["loadgen_cpu_pct"] = round(sum(v for k, v in usage.items() if k.startswith("loadgen")), 1)
    f["steady_s"] = params.steady_s
    f["gateway_rss_mb"] = round(max(rss) / 1024, 1) if rss else None
    figures = await workers.call("figures", within=30)
    window = _merge([fig["window"] for fig in figures])
    answered = window.get("answered", 0)
    f["meter_values_window"] = window
    f["meter_values_per_s"] = round(answered / params.steady_s, 1)
    f["late_readings"] = sum(fig["late_readings"] for fig in figures)
    f["meter_values_errors"] = _merge([fig["meter_values_errors"] for fig in figures])
    f["closed_by_gateway"] = sum(fig["closed_by_gateway"] for fig in figures)
    f["gateway_cpu_s"] = round(gateway_cpu_s, 2)
    f["gateway_cpu_us_per_meter_values"] = (
        round(1e6 * gateway_cpu_s / answered, 1) if answered else None
    )
    idle_per_cp_s = f.get("gateway_idle_cpu_us_per_cp_s")
    if answered and idle_per_cp_s is not None:  # minus the heartbeats' share, measured idle
        marginal = 1e6 * gateway_cpu_s / answered - idle_per_cp_s * n * params.steady_s / answered
        f["gateway_cpu_us_per_meter_values_marginal"] = round(marginal, 1)
    f["call_to_result"] = summary_ms(ms / 1000 for r in recorded for ms in r["rtt_ms"])
    latencies = telemetry_latencies(workers.sent(), dashboard.seen())
    f["meter_values_to_screen"] = summary_ms(latencies)
    f["ws_push_delay"] = summary_ms(dashboard.push_delay_s)


def _merge(parts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = out.get(key, 0) + value
    return out


def _judge(run: Run, dashboard: Dashboard, gateway: Gateway, n: int) -> None:
    f = run.figures
    wrongly = sorted(dashboard.wrongly_disconnected)
    f["wrongly_desconectado"] = len(wrongly)
    f["wrongly_desconectado_examples"] = wrongly[:10]
    lag = f.get("meter_values_to_screen") or {}
    p99 = lag.get("p99_ms")
    if lag.get("n", 0) == 0:
        run.failures.append("no MeterValues sent in the window")
    elif p99 is None:
        run.failures.append(f"{lag['never_seen']} of {lag['n']} readings never reached Central")
    elif p99 >= LAG_LIMIT_S * 1000:
        run.failures.append(f"end-to-end lag p99 {p99:.0f} ms (limit {LAG_LIMIT_S * 1000:g} ms)")
    window = f.get("meter_values_window") or {}
    unanswered = window.get("sent", 0) - window.get("answered", 0)
    if unanswered:
        run.failures.append(f"{unanswered} MeterValues of the window unanswered")
    if f.get("suministrando_at_end", 0) < n:
        run.failures.append(f"{f.get('suministrando_at_end')} of {n} Suministrando at the end")
    if wrongly:
        run.failures.append(f"{len(wrongly)} CPs wrongly Desconectado")
    if f.get("closed_by_gateway"):
        run.failures.append(f"{f['closed_by_gateway']} chargers' connections closed")
    if not gateway.alive:
        run.failures.append("EV_OCPP exited")


# --- results ------------------------------------------------------------------------------------


def save(runs: list[Run], params: OcppParams, stopped: str) -> dict[str, Any]:
    ordered = [run.as_dict() for run in sorted(runs, key=lambda r: r.n)]
    results = {
        "runs": ordered,
        "headline_n": headline(ordered),
        "stopped": stopped or "every N asked for was run",
        "criteria": f"every CP Suministrando, MeterValues -> Central's screen p99 < "
        f"{LAG_LIMIT_S:g} s, every MeterValues answered, no CP wrongly Desconectado, through "
        "the steady window",
    }
    write_result("ocpp", {**asdict(params), "sizes": list(params.sizes)}, results)
    return results


def headline(runs: list[dict[str, Any]]) -> int | None:
    """The largest N that holds, below the smallest N that failed."""
    failed = [r["n"] for r in runs if not r["holds"]]
    limit = min(failed) if failed else math.inf
    held = [r["n"] for r in runs if r["holds"] and r["n"] < limit]
    return max(held) if held else None
