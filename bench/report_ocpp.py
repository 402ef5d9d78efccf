"""The section "OCPP gateway (issue 16)" of docs/performance.md, from docs/bench/ocpp.json
(`python -m bench ocpp`), with the verdict and analysis kept by hand in docs/bench/ocpp-notes.md
(included as it is, so regenerating never loses it)."""

from __future__ import annotations

from typing import Any

from bench.harness import RESULTS, read_result

HEADING = "## OCPP gateway (issue 16)"
NOTES = RESULTS / "ocpp-notes.md"


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        text = f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text}{unit}"


def _three(s: dict[str, Any] | None) -> str:
    s = s or {}
    return " / ".join(_fmt(s.get(k)) for k in ("p50_ms", "p99_ms", "max_ms"))


TABLE = (
    "| N | holds | MeterValues/s | CALL → CALLRESULT p50 / p99 / max ms "
    "| MeterValues → Central's screen p50 / p99 / max ms | gateway CPU % "
    "| gateway µs per MeterValues (all / minus heartbeats) | heartbeats only: gateway µs per CP-second "
    "| gateway RSS MB (KB per CP) | ramp s (chargers/s) | Central CPU % | broker CPU % "
    "| load generator CPU % | other processes CPU % | machine CPU % "
    "| all stop at once: StopTransactions/s (CPs Desconectado meanwhile) |\n|" + "---|" * 16
)


def _row(run: dict[str, Any]) -> str:
    return (
        f"| {run['n']:,} | {_fmt(run['holds'])} | {_fmt(run.get('meter_values_per_s'))} "
        f"| {_three(run.get('call_to_result'))} | {_three(run.get('meter_values_to_screen'))} "
        f"| {_fmt(run.get('gateway_cpu_pct'))} "
        f"| {_fmt(run.get('gateway_cpu_us_per_meter_values'))} / "
        f"{_fmt(run.get('gateway_cpu_us_per_meter_values_marginal'))} "
        f"| {_fmt(run.get('gateway_idle_cpu_us_per_cp_s'))} "
        f"| {_fmt(run.get('gateway_rss_mb'))} ({_fmt(run.get('gateway_rss_per_cp_kb'))}) "
        f"| {_fmt(run.get('ramp_s'))} ({_fmt(run.get('boots_per_s'))}) "
        f"| {_fmt(run.get('central_cpu_pct'))} | {_fmt(run.get('broker_cpu_pct'))} "
        f"| {_fmt(run.get('loadgen_cpu_pct'))} | {_fmt(run.get('others_cpu_pct'))} "
        f"| {_fmt(run.get('machine_cpu_pct'))} "
        f"| {_fmt(run.get('stop_transactions_per_s'))} "
        f"({_fmt(run.get('desconectado_during_stops'))}) |"
    )


def _profile(run: dict[str, Any]) -> list[str]:
    prof = run.get("profile")
    if not prof or "self" not in prof:
        return []
    lines = [
        f"### py-spy: EV_OCPP during the steady window, N = {run['n']:,}",
        "",
        f"{prof['samples']:,} samples over {prof.get('seconds')} s (the gateway busy "
        f"{prof['busy_pct_of_one_core']} % of one core while sampled; stacks in "
        f"`{prof.get('folded')}`). Measured {run['date']} with `{run['command']}`.",
        "",
        "| by library (innermost frame) | % of samples |",
        "|---|---|",
    ]
    lines += [f"| {row['function']} | {row['pct']} |" for row in prof["by_area"]]
    lines += ["", "| top functions, inclusive | % |", "|---|---|"]
    lines += [f"| `{row['function']}` | {row['pct']} |" for row in prof["inclusive"][:12]]
    return [*lines, ""]


def section() -> list[str]:
    d = read_result("ocpp")
    if d is None:
        return [HEADING, "", "Not measured yet: `python -m bench ocpp`.", ""]
    r, cpus = d["results"], d["machine"]["cpus"]
    lines = [
        HEADING,
        "",
        "N OCPP 1.6J chargers (the PyPI `ocpp` package as the client, `bench/ocpp_load.py`, in "
        "its own process) against one EV_OCPP process, itself against one EV_Central: each boots "
        "(HTTP Basic, security profile 1), authorises its driver, starts a transaction and then "
        "sends MeterValues (Energy.Active.Import.Register, Wh) every second. **CALL → CALLRESULT** "
        "is the round trip at the charger; **MeterValues → Central's screen** is from the send to "
        "Central's admin WebSocket showing that energy (or a later one), as the telemetry "
        "benchmark measures it. Gateway CPU is its utime+stime (/proc) over the steady window "
        "divided by the MeterValues answered in it; besides the readings, the gateway sends one "
        "Monitor heartbeat a second per CP to Central (and reads its answer), measured on its own "
        "in a window with every CP supplying and no readings (*heartbeats only*); *minus "
        "heartbeats* takes that share out. CPU % is of one core: broker, Central, gateway, load "
        f"generator and everything else running on the machine share its {cpus} cores.",
        "",
        f"**Headline: N = {_fmt(r.get('headline_n'))} chargers** (criteria: {r.get('criteria')}). "
        f"{r.get('stopped', '')}.",
        "",
        TABLE,
        *(_row(run) for run in r["runs"]),
        "",
    ]
    failing = [run for run in r["runs"] if not run["holds"]]
    lines += [f"- N = {run['n']:,} fails: " + "; ".join(run["failures"]) + "." for run in failing]
    if failing:
        lines.append("")
    if NOTES.exists():
        lines += [NOTES.read_text(encoding="utf-8").strip(), ""]
    for run in r["runs"]:
        lines += _profile(run)
    lines += ["Commands:", ""]
    lines += [f"- N = {run['n']:,}: `{run['command']}` ({run['date']})" for run in r["runs"]]
    return [*lines, ""]
