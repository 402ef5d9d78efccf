"""Scale: N CPs supplying at once against one EV_Central, each with its Monitor heartbeat and its
Engine telemetry every second (the load generator, in 1-2 worker processes).

One run per N, each against a fresh Central:
1. Central starts with N CPs and N drivers seeded; RSS once loaded (no connection yet).
2. The admin WebSocket is opened; every CP connects and authenticates (RSS again: connections).
3. Every driver asks for a supply at its CP at once; each Engine starts on SUPPLY_AUTHORISED.
4. Warm-up, then until Central has caught up with the backlog the burst left (lag under half a
   second of traffic for 2 s), then a steady window: Central's CPU % and RSS (/proc), the
   consumer lag of its group on cp-events and driver-events (committed vs end offsets, every
   0.1 s), each reading's delay to the screen, heartbeats.
5. Every supply ends with SUPPLY_ENDED (final reading = last + 0.1 kWh) and each session is
   checked through `GET /api/sessions`: amount == cost(final energy, price).

A run holds when: every CP supplied and Central caught up, lag < 1 s, telemetry p99 to screen
< 1 s, no CP wrongly Desconectado, every session ended and billed right. The sweep stops after
the first N that fails (and when the time budget of `python -m bench` runs out).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import Any

import httpx

from bench.context import Context, cp_specs, running_central
from bench.harness import (
    ADMIN_TOKEN,
    BENCH_SECRET,
    RESULTS,
    Central,
    CpuWatch,
    LagProbe,
    Network,
    command_line,
    cpu_seconds,
    read_result,
    rss_kb,
    utc_now,
    write_result,
)
from bench.loadgen import LoadConfig, Workers, merge_figures
from bench.observer import Dashboard
from bench.profile import Profiler
from bench.stats import (
    LagSample,
    lag_seconds,
    linear_fit,
    percentile,
    summary_ms,
    telemetry_latencies,
)
from evcharging.domain.money import cost

log = logging.getLogger(__name__)

SWEEP = (100, 500, 1000, 2000, 5000, 10000)
QUICK_SWEEP = (50, 100)
LAG_LIMIT_S = 1.0
TELEMETRY_LIMIT_S = 1.0
FINAL_EXTRA_WH = 100
LAG_EVERY_S = 0.1  # the resolution of the lag in seconds
SETTLED_FOR_S = 2.0
FAILED_WINDOW_S = 10.0


@dataclass(frozen=True)
class ScaleParams:
    sizes: tuple[int, ...] = SWEEP
    steady_s: float = 30.0
    warmup_s: float = 5.0
    ramp_s: float = 90.0
    workers: int = 0  # 0: one below 5,000 CPs, two from there
    profile: str = ""  # "ramp" or "steady": py-spy records Central during that phase
    settle_s: float = 60.0
    telemetry_n1000: bool = False  # measure N = 1,000 even if the sweep stops below it

    @classmethod
    def quick(cls) -> ScaleParams:
        return cls(sizes=QUICK_SWEEP, steady_s=8.0, warmup_s=2.0, ramp_s=30.0, settle_s=15.0)

    def workers_for(self, n: int) -> int:
        return self.workers or (2 if n >= 5000 else 1)


@dataclass
class Run:
    """Everything measured for one N."""

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


def estimated_s(n: int, params: ScaleParams) -> float:
    """A rough, rather pessimistic length of one run, for the time budget: start-up, connections and stop
    (30 s), the ramp, settling, warm-up and steady windows, the end and the billing check."""
    ramp = min(params.ramp_s, 5 + n / 40)
    end = max(60.0, n / 100) + n / 400
    return 30 + ramp + params.warmup_s + min(params.settle_s, 20) + params.steady_s + end


async def sweep(ctx: Context, params: ScaleParams, merge: bool) -> dict[str, Any]:
    """Each N in turn; stop after the first that fails, or when the time budget runs out."""
    runs: list[Run] = []
    stopped = ""
    for n in params.sizes:
        if ctx.remaining < estimated_s(n, params):
            stopped = f"N = {n:,} not run: only {ctx.remaining:.0f} s of the time budget left"
            log.warning("%s", stopped)
            break
        try:
            run = await measure(ctx, n, params)
        except (RuntimeError, TimeoutError, OSError) as exc:  # the harness failed: say so, stop
            log.exception("scale N=%d could not be measured", n)
            run = Run(n, command_line(), failures=[f"not measured: {type(exc).__name__}: {exc}"])
        runs.append(run)
        log_run(run)
        if n == 1000:
            write_telemetry(run, params)
        if not run.holds:
            stopped = f"Stopped after N = {n:,}, which fails"
            break
    if 1000 not in [run.n for run in runs] and params.telemetry_n1000:
        await _telemetry_anyway(ctx, params, runs)
    return save(runs, params, stopped, merge=merge)


async def _telemetry_anyway(ctx: Context, params: ScaleParams, runs: list[Run]) -> None:
    """The telemetry target is set at N = 1,000: measure it even when the sweep stopped below."""
    if ctx.remaining < estimated_s(1000, params):
        log.warning("telemetry at N=1000 not measured: out of time budget")
        return
    try:
        run = await measure(ctx, 1000, params)
    except (RuntimeError, TimeoutError, OSError):
        log.exception("telemetry at N=1000 could not be measured")
        return
    log_run(run)
    write_telemetry(run, params)
    runs.append(run)


def log_run(run: Run) -> None:
    f = run.figures
    log.info(
        "N=%d %s: central %.0f%% CPU, %.0f MB, lag %s s, telemetry p99 %s ms %s",
        run.n,
        "holds" if run.holds else "FAILS",
        f.get("central_cpu_pct", math.nan),
        f.get("central_rss_mb", math.nan),
        f.get("lag_s_max"),
        (f.get("telemetry_to_screen") or {}).get("p99_ms"),
        "; ".join(run.failures),
    )


async def measure(ctx: Context, n: int, params: ScaleParams, tag: str = "") -> Run:
    """One run at N against a fresh Central (its database and log named `scale-N` + `tag`)."""
    run = Run(n, command_line())
    run.figures["encryption"] = ctx.mode
    net = Network("SC", n)
    log.info("scale N=%d: starting Central", n)
    async with running_central(ctx, net, f"scale-{n}{tag}") as central:
        run.figures["central_start_s"] = round(time.monotonic() - central.started_at, 1)
        await asyncio.sleep(1.0)
        run.figures["central_rss_loaded_mb"] = round(rss_kb(central.pid) / 1024, 1)
        workers = Workers(
            LoadConfig(
                kafka=ctx.kafka,
                central_host="127.0.0.1",
                central_port=central.port,
                secret=BENCH_SECRET,
                encryption=ctx.encryption,
            ),
            cp_specs(net),
            params.workers_for(n),
            ctx.workdir,
        )
        dashboard = Dashboard(central.ws_url, net.cp_ids, ADMIN_TOKEN)
        try:
            await dashboard.start()
            await workers.start()
            await _phases(ctx, central, workers, dashboard, net, params, run)
        finally:
            await workers.close()
            await dashboard.close()
            run.figures.setdefault("central_log", central.log_counts())
            run.figures["central_alive_at_end"] = central.alive
    run.figures["central_stop_s"] = central.stop_s
    run.figures["central_needed_sigkill"] = central.killed
    return run


async def _phases(
    ctx: Context,
    central: Central,
    workers: Workers,
    dashboard: Dashboard,
    net: Network,
    params: ScaleParams,
    run: Run,
) -> None:
    f, n = run.figures, net.size
    f["loadgen_workers"] = len(workers.pids)
    connected = await workers.call("connect", within=180)
    f["connected"] = sum(c["connected"] for c in connected)
    f["connect_s"] = max(c["connect_s"] for c in connected)
    await asyncio.sleep(2.0)
    rss_connected = rss_kb(central.pid)
    f["central_rss_connected_mb"] = round(rss_connected / 1024, 1)
    f["rss_per_connection_kb"] = round((rss_connected - f["central_rss_loaded_mb"] * 1024) / n, 2)
    if f["connected"] < n:
        run.failures.append(f"only {f['connected']} of {n} CPs connected")
        return
    dashboard.watch_disconnects = True
    profiler = _profiler(central, n, params, "ramp")
    if profiler is not None:
        profiler.start()
    t0 = time.monotonic()
    supplied = await workers.call("supply", within=params.ramp_s + 30, ramp_s=params.ramp_s)
    f["authorised"] = sum(s["supplying"] for s in supplied)
    on_screen = await dashboard.wait_count(
        "Suministrando", n, within=max(5.0, params.ramp_s - (time.monotonic() - t0))
    )
    f["ramp_s"] = round(time.monotonic() - t0, 1)
    f["supplying_on_screen"] = dashboard.counts["Suministrando"]
    f["authorisations_per_s"] = round(f["authorised"] / max(f["ramp_s"], 0.1), 1)
    if profiler is not None:
        f["profile"] = profiler.stop()
    if f["authorised"] < n or not on_screen:
        run.failures.append(
            f"ramp incomplete: {f['authorised']} of {n} authorised, {dashboard.counts['Suministrando']} "
            f"shown Suministrando after {f['ramp_s']} s"
        )  # measured all the same, with the supplies that did start: the figures say why
    await asyncio.sleep(params.warmup_s)
    if not run.holds:  # failed already: shorter windows, for the figures that say why
        params = replace(params, settle_s=FAILED_WINDOW_S, steady_s=FAILED_WINDOW_S)
    f["settle_s"], settled = await _settle(ctx, central, params.settle_s)
    if not settled:
        run.failures.append(f"Central did not catch up with its topics in {params.settle_s:g} s")
    f["steady_s"] = params.steady_s
    await _steady(ctx, central, workers, dashboard, params, run)
    await _billing(central, workers, dashboard, net, run, patience=60.0 if run.holds else 20.0)
    f["central_log"] = central.log_counts()  # before the links close at the end
    _judge(run, dashboard)


def _profiler(central: Central, n: int, params: ScaleParams, phase: str) -> Profiler | None:
    if params.profile != phase:
        return None
    return Profiler(central.pid, RESULTS / f"profile-central-n{n}-{phase}.folded")


async def _settle(ctx: Context, central: Central, within: float) -> tuple[float, bool]:
    """After the ramp, until Central has caught up with its topics (the backlog the burst of
    authorisations left behind) for 2 s in a row: the steady window starts from there."""
    probe = LagProbe(ctx.kafka, central.group_id)
    await probe.start()
    t0 = time.monotonic()
    samples: list[LagSample] = []
    try:
        while time.monotonic() - t0 < within:
            samples.append(await probe.sample())
            recent = [s for s in samples if s.t >= samples[-1].t - SETTLED_FOR_S]
            if samples[-1].t - samples[0].t >= SETTLED_FOR_S and _caught_up(recent):
                return round(time.monotonic() - t0, 1), True
            await asyncio.sleep(LAG_EVERY_S)
    finally:
        await probe.close()
    return round(time.monotonic() - t0, 1), False


def _caught_up(recent: list[LagSample]) -> bool:
    """The backlog of every recent sample is less than half a second of incoming messages."""
    span = recent[-1].t - recent[0].t
    arrived = sum(recent[-1].ends.values()) - sum(recent[0].ends.values())
    if span <= 0:
        return False
    rate = max(arrived / span, 1.0)
    return all(s.messages / rate < 0.5 for s in recent)


async def _steady(
    ctx: Context,
    central: Central,
    workers: Workers,
    dashboard: Dashboard,
    params: ScaleParams,
    run: Run,
) -> None:
    f = run.figures
    probe = LagProbe(ctx.kafka, central.group_id)
    await probe.start()
    pids = {"central": central.pid, "broker": ctx.broker_pid, "observer": os.getpid()}
    cpu = CpuWatch(pids | {f"loadgen{k}": pid for k, pid in enumerate(workers.pids)})
    samples: list[LagSample] = []
    rss: list[int] = []
    cpu_marks: list[tuple[float, float]] = []
    profiler = _profiler(central, run.n, params, "steady")
    try:
        await workers.call("mark", within=10)
        dashboard.recording = True
        cpu.start()
        if profiler is not None:
            profiler.start()
        deadline = time.monotonic() + params.steady_s
        while time.monotonic() < deadline:
            samples.append(await probe.sample())
            rss.append(rss_kb(central.pid))
            cpu_marks.append((time.time(), cpu_seconds(central.pid)))
            await asyncio.sleep(LAG_EVERY_S)
        usage = cpu.stop()
        await workers.call("stop_recording", within=30)
        drain_until = time.monotonic() + 3.0
        while time.monotonic() < drain_until:  # the last readings' way to the screen, and lag
            samples.append(await probe.sample())
            await asyncio.sleep(LAG_EVERY_S)
        dashboard.recording = False
    finally:
        await probe.close()
    if profiler is not None:
        f["profile"] = profiler.stop()
    steady = [s for s in samples if s.t <= samples[0].t + params.steady_s]
    lags = lag_seconds(samples)[: len(steady)]
    loadgen_cpu = sum(v for k, v in usage.items() if k.startswith("loadgen"))
    f.update(usage)
    f["loadgen_cpu_pct"] = round(loadgen_cpu, 1)
    f["central_rss_mb"] = round(max(rss) / 1024, 1) if rss else None
    f["central_rss_mean_mb"] = round(sum(rss) / len(rss) / 1024, 1) if rss else None
    f["lag_messages_max"] = max((s.messages for s in steady), default=None)
    f["lag_s_max"] = round(max(lags), 2) if lags else None
    f["lag_s_p99"] = round(percentile(sorted(lags), 99), 2) if lags else None
    f.update(cpu_per_message(steady, cpu_marks[: len(steady)]))
    sent = workers.sent()
    latencies = telemetry_latencies(sent, dashboard.seen())
    f["telemetry_sent_steady"] = len(sent)
    f["telemetry_per_s"] = round(len(sent) / params.steady_s, 1)
    f["telemetry_to_screen"] = summary_ms(latencies)
    f["timeline"] = timeline(samples[: len(steady)], lags, cpu_marks, sent, latencies)
    f["ws_push_delay"] = summary_ms(dashboard.push_delay_s)
    f["ws_frames"] = dict(dashboard.frames)
    f["loadgen"] = merge_figures(await workers.call("figures", within=30))


def cpu_per_message(
    samples: list[LagSample], cpu_marks: list[tuple[float, float]]
) -> dict[str, Any]:
    """Central's CPU seconds over the steady window / the records it handled in it (its group's
    committed offsets on cp-events and driver-events, sampled with the CPU). The CPU also pays
    for the heartbeats (one per record in steady state) and the dashboard: the same in both
    encryption modes, so the on/off ratio is what encryption adds."""
    if len(samples) < 2 or len(cpu_marks) < 2:
        return {"messages_handled": None, "central_cpu_us_per_message": None}
    first, last = samples[0].committed, samples[-1].committed
    handled = sum(last[tp] - first[tp] for tp in last.keys() & first.keys())
    cpu_s = cpu_marks[-1][1] - cpu_marks[0][1]
    return {
        "messages_handled": handled,
        "central_cpu_s": round(cpu_s, 2),
        "central_cpu_us_per_message": round(1e6 * cpu_s / handled, 1) if handled > 0 else None,
    }


def timeline(
    samples: list[LagSample],
    lags: list[float],
    cpu_marks: list[tuple[float, float]],
    sent: list[tuple[int, int, float]],
    latencies: list[float],
) -> list[dict[str, Any]]:
    """Second by second over the steady window: Central's CPU, the lag, the readings' p99."""
    if not samples:
        return []
    t0 = samples[0].t
    bins: dict[int, dict[str, Any]] = {}
    for sample, lag in zip(samples, lags, strict=True):
        b = bins.setdefault(int(sample.t - t0), {"lag_msgs": 0, "lag_s": 0.0, "tel": []})
        b["lag_msgs"] = max(b["lag_msgs"], sample.messages)
        b["lag_s"] = max(b["lag_s"], lag)
    for (_, _, t), latency in zip(sent, latencies, strict=True):
        if int(t - t0) in bins:
            bins[int(t - t0)]["tel"].append(latency)
    cpu_at = {int(t - t0): c for t, c in cpu_marks}
    out = []
    for second in sorted(bins):
        b = bins[second]
        busy = cpu_at.get(second + 1, math.nan) - cpu_at.get(second, math.nan)
        out.append(
            {
                "s": second,
                "central_cpu_pct": None if math.isnan(busy) else round(100 * busy, 1),
                "lag_msgs": b["lag_msgs"],
                "lag_s": round(b["lag_s"], 2),
                "telemetry_p99_ms": summary_ms(b["tel"]).get("p99_ms"),
            }
        )
    return out


async def _billing(
    central: Central,
    workers: Workers,
    dashboard: Dashboard,
    net: Network,
    run: Run,
    patience: float,
) -> None:
    """Unplug everyone; each session must be billed cost(final energy, price), with that energy."""
    f = run.figures
    t0 = time.monotonic()
    finals = [
        tuple(x)
        for part in await workers.call("end", within=60, extra_wh=FINAL_EXTRA_WH)
        for x in part["finals"]
    ]
    ended = await dashboard.wait_no_sessions(within=max(patience, net.size / 100))
    f["end_all_s"] = round(time.monotonic() - t0, 1)
    f["sessions_to_bill"] = len(finals)
    t1 = time.monotonic()
    billed = await _ended_sessions(central, net)
    f["billing_check_s"] = round(time.monotonic() - t1, 1)
    errors: list[str] = []
    missing = 0
    for cp_id, session_id, wh, price in finals:
        row = billed.get(str(session_id))
        if row is None:
            missing += 1
            continue
        want_kwh = Decimal(int(wh)) / 1000
        want = cost(want_kwh, Decimal(str(price)))
        if Decimal(row["amount_eur"]) != want or Decimal(row["energy_kwh"]) != want_kwh:
            errors.append(
                f"{cp_id}: billed {row['energy_kwh']} kWh {row['amount_eur']} EUR, "
                f"want {want_kwh} kWh {want} EUR"
            )
    f["sessions_not_ended"] = missing
    f["billing_errors"] = len(errors)
    f["billing_error_examples"] = errors[:5]
    if missing or not ended:
        run.failures.append(f"{missing} sessions not ended {f['end_all_s']} s after SUPPLY_ENDED")


async def _ended_sessions(central: Central, net: Network) -> dict[str, dict[str, Any]]:
    """Ended sessions by id, from the API (which pages by at most 1000: per driver beyond that)."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}  # the unversioned /api: the operator's
    async with httpx.AsyncClient(base_url=central.api, headers=headers, timeout=30) as http:
        if net.size <= 1000:
            rows = (
                await http.get("/api/sessions", params={"status": "ended", "limit": 1000})
            ).json()
            return {r["session_id"]: r for r in rows}
        gate = asyncio.Semaphore(8)

        async def of(i: int) -> list[dict[str, Any]]:
            async with gate:
                reply = await http.get(
                    "/api/sessions", params={"status": "ended", "driver_id": net.driver_id(i)}
                )
                return list(reply.json())

        found = await asyncio.gather(*(of(i) for i in range(net.size)))
    return {r["session_id"]: r for rows in found for r in rows}


def _judge(run: Run, dashboard: Dashboard) -> None:
    f = run.figures
    wrongly = sorted(dashboard.wrongly_disconnected)
    f["wrongly_desconectado"] = len(wrongly)
    f["wrongly_desconectado_examples"] = wrongly[:10]
    lag = f.get("lag_s_max")
    if lag is None or not math.isfinite(lag):
        run.failures.append("consumer lag: Central never caught up during the window")
    elif lag >= LAG_LIMIT_S:
        run.failures.append(f"consumer lag {lag} s (limit {LAG_LIMIT_S:g} s)")
    tel = f["telemetry_to_screen"]
    p99 = tel.get("p99_ms")
    if tel.get("n", 0) == 0:
        run.failures.append("no reading sent in the window to measure telemetry to screen")
    elif p99 is None:
        run.failures.append(f"{tel['never_seen']} of {tel['n']} readings never reached the screen")
    elif p99 >= TELEMETRY_LIMIT_S * 1000:
        run.failures.append(
            f"telemetry p99 to screen {p99} ms (limit {TELEMETRY_LIMIT_S * 1000:g} ms)"
        )
    if wrongly:
        run.failures.append(f"{len(wrongly)} CPs wrongly Desconectado")
    if f["billing_errors"]:
        run.failures.append(f"{f['billing_errors']} billing errors")
    stopped = f["loadgen"].get("supplies_stopped_by_central", 0)
    if stopped:
        run.failures.append(f"{stopped} supplies stopped by Central")


# --- results ------------------------------------------------------------------------------------


def save(runs: list[Run], params: ScaleParams, stopped: str, merge: bool) -> dict[str, Any]:
    """Write docs/bench/scale.json: a sweep replaces it; single runs (`--n`, telemetry) are
    merged in, each replacing an earlier run of the same N (every run keeps its command)."""
    old = (read_result("scale") or {}) if merge else {}
    by_n = {r["n"]: r for r in (old.get("results") or {}).get("runs", [])}
    by_n.update({run.n: run.as_dict() for run in runs})
    ordered = [by_n[n] for n in sorted(by_n)]
    results = {
        "runs": ordered,
        "headline_n": headline(ordered),
        "stopped": stopped or "every N asked for was run",
        "memory": memory(ordered),
        "criteria": f"lag < {LAG_LIMIT_S:g} s, telemetry p99 to screen < {TELEMETRY_LIMIT_S:g} s, "
        "no CP wrongly Desconectado, no billing error, every CP supplying",
    }
    write_result("scale", {**asdict(params), "sizes": list(params.sizes)}, results)
    return results


def headline(runs: list[dict[str, Any]]) -> int | None:
    """The largest N that holds, below the smallest N that failed."""
    failed = [r["n"] for r in runs if not r["holds"]]
    limit = min(failed) if failed else math.inf
    held = [r["n"] for r in runs if r["holds"] and r["n"] < limit]
    return max(held) if held else None


def memory(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Central's RSS against N: the slope is the memory one more supplying, connected CP costs."""
    pts = [(r["n"], r["central_rss_mb"]) for r in runs if r.get("central_rss_mb")]
    loaded = [(r["n"], r["central_rss_loaded_mb"]) for r in runs if r.get("central_rss_loaded_mb")]
    fit = linear_fit([float(n) for n, _ in pts], [float(mb) for _, mb in pts])
    fit_loaded = linear_fit([float(n) for n, _ in loaded], [float(mb) for _, mb in loaded])
    return {
        "rss_slope_kb_per_cp": round(fit[0] * 1024, 1) if fit else None,
        "rss_intercept_mb": round(fit[1], 1) if fit else None,
        "loaded_slope_kb_per_cp": round(fit_loaded[0] * 1024, 1) if fit_loaded else None,
        "points": pts,
    }


def write_telemetry(run: Run, params: ScaleParams) -> None:
    """Benchmark 3 is the scale run at N = 1,000: its telemetry figures in their own file."""
    f = run.figures
    results = {
        "telemetry_to_screen": f.get("telemetry_to_screen"),
        "ws_push_delay": f.get("ws_push_delay"),
        "telemetry_per_s": f.get("telemetry_per_s"),
        "central_cpu_pct": f.get("central_cpu_pct"),
        "lag_s_max": f.get("lag_s_max"),
        "holds": run.holds,
        "failures": run.failures,
        "source": "the scale run at N = 1,000 (docs/bench/scale.json)",
    }
    write_result(
        "telemetry", {"n": run.n, "steady_s": params.steady_s, "warmup_s": params.warmup_s}, results
    )
