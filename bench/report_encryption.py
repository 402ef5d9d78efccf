"""The section "Encryption cost (issue 14)" of docs/performance.md, from docs/bench/seal.json,
encryption-auth.json and encryption-holds.json (`python -m bench encryption` writes all three)."""

from __future__ import annotations

from typing import Any

from bench import encryption
from bench.harness import read_result

HEADING = "## Encryption cost (issue 14)"
SITTING = "python -m bench encryption"


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


def _pct(fraction: float | None) -> str:
    return "–" if fraction is None else f"{fraction * 100:+.1f} %"


def _provenance(d: dict[str, Any]) -> str:
    return f"Measured {d['date']} with `{d['command']}`; parameters `{d['parameters']}`."


def section() -> list[str]:
    seal, auth_data, holds = read_result("seal"), *encryption.load()
    lines = [
        HEADING,
        "",
        "Every record between an Engine and Central (cp-events, cp-commands) is sealed with the "
        "CP's key (AES-256-GCM, docs/security.md). Measured side by side: the same benchmarks "
        "with encryption on and off (`EV_Central --cp-encryption off`, the load generator plain "
        "too), alternately in one sitting, counterbalanced (on, off, off, on, on, off), each run against a fresh "
        f"Central. The issue's budget: encryption costs at most {encryption.BUDGET * 100:.0f} % on each "
        "figure.",
        "",
    ]
    if auth_data is None and holds is None and seal is None:
        return [*lines, f"Not measured yet: `{SITTING}`.", ""]
    lines += comparison_table(auth_data, holds)
    lines += holds_section(holds)
    lines += auth_runs(auth_data)
    lines += seal_section(seal, holds)
    return lines


def comparison_table(auth_data: dict[str, Any] | None, holds: dict[str, Any] | None) -> list[str]:
    lines = [
        "| figure | encryption on | off | on/off | cost | within budget | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in encryption.comparison(auth_data, holds):
        lines.append(
            f"| {f.what} | {_fmt(f.on, f.unit)} | {_fmt(f.off, f.unit)} | {_fmt(f.ratio)} | "
            f"{_pct(f.cost)} | {_fmt(f.within_budget)} | {f.note} |"
        )
    return [
        *lines,
        "",
        "Cost: on/off − 1 for CPU and latency, 1 − on/off for N (a positive cost is worse with "
        "encryption). CPU per message: Central's CPU seconds over the steady window / the records "
        "it handled in it (cp-events and driver-events; the CPU also pays for a heartbeat per "
        "record and the dashboard, alike in both modes).",
        "",
    ]


RUN_HEAD = (
    "| N | encryption | run | holds | Central CPU % | CPU µs / message | lag max s "
    "| telemetry p99 ms | ramp s | load generator CPU % | broker CPU % | other processes CPU % "
    "| machine CPU % | records dropped by Central | date |\n|" + "---|" * 15
)


def holds_section(d: dict[str, Any] | None) -> list[str]:
    if d is None:
        return [
            "### The largest N that holds",
            "",
            f"Not measured yet: `{SITTING}` (or `python -m bench holds`).",
            "",
        ]
    r, p = d["results"], d["parameters"]
    lines = [
        "### The largest N that holds",
        "",
        f"Criteria: {r.get('criteria')}. N asked for: {', '.join(f'{n:,}' for n in p['sizes'])}; "
        f"steady window {p.get('steady_s')} s.",
        "",
    ]
    for mode, v in (r.get("verdict") or {}).items():
        tallies = "; ".join(
            f"N = {int(n):,}: {t['held']} of {t['runs']} held"
            for n, t in v["per_n"].items()
            if t["runs"]
        )
        floor = " (every N asked for held: a floor)" if v.get("every_n_held") else ""
        lines.append(
            f"- Encryption {mode}: **N = {_fmt(v.get('largest_n'))}**{floor}. {tallies or 'no run'}."
        )
    lines += [f"- {note}." for note in r.get("notes") or []]
    lines += ["", "Central's CPU per message by N (median of the runs that held):", ""]
    lines += [
        "| N | on µs | off µs | on/off | runs that held (on / off) |",
        "|---|---|---|---|---|",
    ]
    for row in r.get("cpu_per_message") or []:
        lines.append(
            f"| {row['n']:,} | {_fmt(row.get('on'))} | {_fmt(row.get('off'))} | "
            f"{_fmt(row.get('ratio'))} | {row.get('on_runs', 0)} / {row.get('off_runs', 0)} |"
        )
    lines += ["", "Every run, in the order they ran:", "", RUN_HEAD]
    for run in r.get("runs") or []:
        tel = run.get("telemetry_to_screen") or {}
        lines.append(
            f"| {run['n']:,} | {run.get('mode')} | {run.get('attempt')} | {_fmt(run['holds'])} | "
            f"{_fmt(run.get('central_cpu_pct'))} | {_fmt(run.get('central_cpu_us_per_message'))} | "
            f"{_fmt(run.get('lag_s_max'))} | {_fmt(tel.get('p99_ms'))} | {_fmt(run.get('ramp_s'))} | "
            f"{_fmt(run.get('loadgen_cpu_pct'))} | {_fmt(run.get('broker_cpu_pct'))} | "
            f"{_fmt(run.get('others_cpu_pct'))} | {_fmt(run.get('machine_cpu_pct'))} | "
            f"{_fmt((run.get('central_log') or {}).get('records_rejected'))} | "
            f"{run.get('date', '')} |"
        )
    failing = [run for run in r.get("runs") or [] if not run["holds"]]
    if failing:
        lines.append("")
        lines += [
            f"- N = {run['n']:,}, encryption {run.get('mode')}, run {run.get('attempt')}: "
            + "; ".join(run["failures"])
            + "."
            for run in failing
        ]
    return [*lines, "", _provenance(d), ""]


def auth_runs(d: dict[str, Any] | None) -> list[str]:
    if d is None:
        return [
            "### Authorisation latency, on and off",
            "",
            f"Not measured yet: `{SITTING}` (or `python -m bench auth --encryption both`).",
            "",
        ]
    r = d["results"]
    lines = [
        "### Authorisation latency, on and off",
        "",
        "`AUTHORIZATION_REQUEST` published -> the driver has `AUTHORIZATION_RESPONSE` (as in "
        '"Authorisation latency" above; with encryption Central also seals the CP\'s '
        "`SUPPLY_AUTHORISED`).",
        "",
        "| run | encryption | requests | p50 ms | p90 ms | p99 ms | max ms | requests/s "
        "| Central CPU % | machine CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in r.get("runs") or []:
        s = run.get("request_to_response") or {}
        if "error" in run:
            lines.append(f"| {run['attempt']} | {run['mode']} | not measured: {run['error']} |")
            continue
        lines.append(
            f"| {run['attempt']} | {run['mode']} | {_fmt(s.get('n'))} | {_fmt(s.get('p50_ms'))} | "
            f"{_fmt(s.get('p90_ms'))} | {_fmt(s.get('p99_ms'))} | {_fmt(s.get('max_ms'))} | "
            f"{_fmt(run.get('requests_per_s'))} | {_fmt(run.get('central_cpu_pct'))} | "
            f"{_fmt(run.get('machine_cpu_pct'))} |"
        )
    for mode, s in (r.get("pooled") or {}).items():
        lines.append(
            f"| all | **{mode}** | {_fmt(s.get('n'))} | {_fmt(s.get('p50_ms'))} | "
            f"{_fmt(s.get('p90_ms'))} | **{_fmt(s.get('p99_ms'))}** | {_fmt(s.get('max_ms'))} "
            "| | | |"
        )
    return [*lines, "", _provenance(d), ""]


PATHS = (
    ("aesgcm", "bare AES-256-GCM: encrypt / decrypt"),
    ("codec", "the product: `seal(event)` / `CpTopicCodec.decode` (replay check, parse)"),
    ("plain", "encryption off: `event.to_bytes()` / `parse_event`"),
    ("loadgen", "load generator: `wire.Sealer` on ready JSON / `CpTopicCodec.decode`"),
)


def seal_section(seal: dict[str, Any] | None, holds: dict[str, Any] | None) -> list[str]:
    if seal is None:
        return [
            "### Encrypt + decrypt per message",
            "",
            "Not measured yet: `python -m bench seal`.",
            "",
        ]
    r = seal["results"]
    lines = [
        "### Encrypt + decrypt per message",
        "",
        f"One `{r['message']}` ({r['plaintext_bytes']} bytes of JSON, {r['sealed_bytes']} "
        f"sealed), each call timed, {seal['parameters']['messages']:,} messages per path.",
        "",
        "| path: write / read | write p50 / p99 µs | read p50 / p99 µs "
        "| both p50 / p99 µs | both mean µs |",
        "|---|---|---|---|---|",
    ]
    for name, what in PATHS:
        p = r["paths"].get(name)
        if not p:
            continue
        w, rd, b = p["write"], p["read"], p["both"]
        lines.append(
            f"| {what} | {_fmt(w.get('p50_us'))} / {_fmt(w.get('p99_us'))} | "
            f"{_fmt(rd.get('p50_us'))} / {_fmt(rd.get('p99_us'))} | "
            f"{_fmt(b.get('p50_us'))} / {_fmt(b.get('p99_us'))} | {_fmt(b.get('mean_us'))} |"
        )
    x = r.get("extra_us") or {}
    lines += [
        "",
        f"What encryption adds per message (the product's path minus the plain one, p50): "
        f"sealing {_fmt(x.get('write_p50_us'))} µs, opening {_fmt(x.get('read_p50_us'))} µs "
        f"(means {_fmt(x.get('write_mean_us'))} and {_fmt(x.get('read_mean_us'))} µs).",
        "",
    ]
    share = central_share(x.get("read_p50_us"), holds)
    if share is not None:
        extra, per_message, where = share
        lines += [
            f"Central's share: it opens every cp-events record (and seals only the few commands), "
            f"so it pays about {_fmt(extra)} µs more per record, against {_fmt(per_message)} µs of "
            f"CPU per record with encryption off ({where}): an expected "
            f"**{100 * extra / per_message:.1f} %** more CPU per message.",
            "",
        ]
    return [*lines, _provenance(seal), ""]


def central_share(
    extra_us: float | None, holds: dict[str, Any] | None
) -> tuple[float, float, str] | None:
    """(µs added per record, Central's µs per record with encryption off, where that is from)."""
    if extra_us is None:
        return None
    rows = [
        row
        for row in ((holds or {}).get("results") or {}).get("cpu_per_message") or []
        if row.get("off")
    ]
    if rows:
        row = rows[-1]
        return extra_us, row["off"], f"measured at N = {row['n']:,}"
    scale = read_result("scale") or {}
    runs = [
        run
        for run in (scale.get("results") or {}).get("runs") or []
        if run["holds"] and run.get("central_cpu_pct") and run.get("telemetry_per_s")
    ]
    if not runs:
        return None
    run = runs[-1]
    per_record = run["central_cpu_pct"] * 1e4 / run["telemetry_per_s"]
    return extra_us, round(per_record, 1), f"the scale run at N = {run['n']:,}, before keys"
