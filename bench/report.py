"""Writes docs/performance.md (and docs/bench/scaling.png) from the JSON files in docs/bench/.

Every figure comes from a JSON file written by a benchmark on this machine, with the command that
produced it. The section "Where the time goes" is kept in docs/bench/where-the-time-goes.md
(written by hand from profiles) and included as it is, so regenerating never loses it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report_encryption, report_ocpp
from bench.harness import DOCS, RESULTS, read_result, shown

log = logging.getLogger(__name__)

OUT = DOCS / "performance.md"
PLOT = RESULTS / "scaling.png"
NOTES = RESULTS / "where-the-time-goes.md"
WEATHER = RESULTS / "weather-and-front.md"  # issue 15's figures: from its tests, kept by hand

Check = Callable[[dict[str, Any]], float | None]


def _get(data: dict[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


TARGETS: list[tuple[str, str, str, Check, float, str]] = [
    # (what, benchmark, target text, value getter, limit, comparison)
    (
        "authorisation p99",
        "auth",
        "< 25 ms",
        lambda d: _get(d, "results", "request_to_response", "p99_ms"),
        25,
        "<",
    ),
    (
        "fault -> driver p99",
        "fault",
        "< 100 ms",
        lambda d: _get(d, "results", "admin_to_driver", "simulate_error_to_driver", "p99_ms"),
        100,
        "<",
    ),
    (
        "telemetry -> screen p99 at N = 1,000",
        "telemetry",
        "< 250 ms",
        lambda d: _get(d, "results", "telemetry_to_screen", "p99_ms"),
        250,
        "<",
    ),
    (
        "scale headline N",
        "scale",
        ">= 5,000",
        lambda d: _get(d, "results", "headline_n"),
        5000,
        ">=",
    ),
]


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        value = f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    elif isinstance(value, int):
        value = f"{value:,}"
    return f"{value}{unit}"


def _latency_row(name: str, s: dict[str, Any] | None) -> str:
    s = s or {}
    never = s.get("never_seen") or 0
    return (
        f"| {name} | {_fmt(s.get('n'))} | {_fmt(s.get('p50_ms'))} | {_fmt(s.get('p90_ms'))} | "
        f"{_fmt(s.get('p99_ms'))} | {_fmt(s.get('max_ms'))} |"
        + (f" {never} never seen |" if never else " |")
    )


LAT_HEAD = "| measure | samples | p50 ms | p90 ms | p99 ms | max ms | note |\n|---|---|---|---|---|---|---|"


def _provenance(d: dict[str, Any]) -> str:
    return f"Measured {d['date']} with `{d['command']}`; parameters `{d['parameters']}`."


def targets_section(data: dict[str, dict[str, Any] | None]) -> list[str]:
    lines = [
        "## Targets (issue 6)",
        "",
        "| target | goal | this machine | status |",
        "|---|---|---|---|",
    ]
    for what, name, goal, get, limit, op in TARGETS:
        found = data[name]
        value = get(found) if found else None
        if value is None:
            status = "not measured" if data[name] is None else "**not met** (no figure: see below)"
        else:
            ok = value < limit if op == "<" else value >= limit
            status = "met" if ok else "**not met**"
        unit = "" if name == "scale" else " ms"
        lines.append(f"| {what} | {goal} | {_fmt(value, unit)} | {status} |")
    return [*lines, ""]


def auth_section(d: dict[str, Any] | None) -> list[str]:
    if d is None:
        return ["## Authorisation latency", "", "Not measured yet: `python -m bench auth`.", ""]
    r = d["results"]
    return [
        "## Authorisation latency",
        "",
        "`AUTHORIZATION_REQUEST` published by a driver -> that driver has `AUTHORIZATION_RESPONSE` "
        "(read from central-events). After each authorisation the driver stops (`charging_stopped`) "
        "and waits for its ticket, which frees the CP.",
        "",
        LAT_HEAD,
        _latency_row("request -> response", r.get("request_to_response")),
        _latency_row(
            "... request -> Central made the response (its `ts`)", r.get("request_to_response_made")
        ),
        _latency_row("... Central made it -> driver has it", r.get("response_made_to_driver")),
        _latency_row("charging_stopped -> ticket", r.get("stop_to_ticket")),
        _latency_row(
            "baseline: one Kafka hop (publish, acked -> consumer), no Central",
            r.get("kafka_hop_baseline"),
        ),
        "",
        f"{r.get('authorised')} authorised, {r.get('denied')} denied, {r.get('requests_per_s')} requests/s; "
        f"Central {r.get('central_cpu_pct')} % CPU, broker {r.get('broker_cpu_pct')} %, the benchmark "
        f"itself {r.get('bench_cpu_pct')} %, other processes {r.get('others_cpu_pct')} %; machine "
        f"{r.get('machine_cpu_pct')} % (of {d['machine']['cpus']} cores x 100).",
        "",
        _provenance(d),
        "",
    ]


def fault_section(d: dict[str, Any] | None) -> list[str]:
    if d is None:
        return ["## Fault propagation", "", "Not measured yet: `python -m bench fault`.", ""]
    a, e = d["results"]["admin_to_driver"], d["results"]["engine_ko_to_screen"]
    return [
        "## Fault propagation",
        "",
        "Admin `POST /api/cps/{id}/simulate-error` -> the driver holding the CP has `CP_ERROR_SIMULATED`; "
        "the Monitor's `FAULT#cp#reason` / `HB#cp#KO` frame written -> the admin WebSocket shows the CP Averiado.",
        "",
        LAT_HEAD,
        _latency_row("simulate-error -> driver", a.get("simulate_error_to_driver")),
        _latency_row("simulate-error HTTP reply", a.get("simulate_error_http_reply")),
        _latency_row("fix-error -> driver", a.get("fix_error_to_driver")),
        _latency_row("Engine KO -> Averiado on screen (both frames)", e.get("all")),
        _latency_row("`FAULT` frame -> Averiado", e.get("fault_frame")),
        _latency_row("`HB#cp#KO` frame -> Averiado", e.get("hb_ko_frame")),
        _latency_row("recovery -> Activado on screen", e.get("recovery_to_screen")),
        "",
        _provenance(d),
        "",
    ]


def telemetry_section(d: dict[str, Any] | None) -> list[str]:
    if d is None:
        return ["## Telemetry to screen", "", "Not measured yet: `python -m bench telemetry`.", ""]
    r = d["results"]
    return [
        "## Telemetry to screen (N = 1,000 supplying CPs)",
        "",
        "A `CP_TELEMETRY` published -> the admin WebSocket shows that CP with that energy (or a later "
        "one). `WebSocket push` is the part from Central's `ts` on the pushed frame to its arrival.",
        "",
        LAT_HEAD,
        _latency_row("telemetry -> screen", r.get("telemetry_to_screen")),
        _latency_row("WebSocket push (Central ts -> page)", r.get("ws_push_delay")),
        "",
        f"{_fmt(r.get('telemetry_per_s'))} readings/s; Central {r.get('central_cpu_pct')} % CPU; "
        f"consumer lag max {r.get('lag_s_max')} s. Source: {r.get('source')}.",
        "",
        _provenance(d),
        "",
    ]


SCALE_HEAD = (
    "| N | holds | Central CPU % | Central RSS MB | lag max s | lag max msgs | telemetry p50 / p99 ms "
    "| HB RTT p99 ms | HB late | wrongly Desconectado | billing errors | ramp s | broker CPU % "
    "| load generator CPU % | other processes CPU % | machine CPU % |\n|" + "---|" * 16
)


def scale_section(d: dict[str, Any] | None) -> list[str]:
    if d is None:
        return ["## Scale", "", "Not measured yet: `python -m bench scale`.", ""]
    r = d["results"]
    lines = [
        "## Scale",
        "",
        "N CPs supplying at once, each with a Monitor heartbeat and an Engine reading every second, "
        "against one EV_Central (load generator: `bench/loadgen.py`). CPU % is of one core "
        "(the machine has "
        f"{d['machine']['cpus']}, so 100 % x {d['machine']['cpus']} is all of it); figures over the steady window.",
        "",
        f"**Headline: N = {_fmt(r.get('headline_n'))}** (criteria: {r.get('criteria')}). {r.get('stopped', '')}.",
        "",
        SCALE_HEAD,
    ]
    for run in r["runs"]:
        tel = run.get("telemetry_to_screen") or {}
        lg = run.get("loadgen") or {}
        lines.append(
            f"| {run['n']:,} | {'yes' if run['holds'] else '**no**'} | {_fmt(run.get('central_cpu_pct'))} | "
            f"{_fmt(run.get('central_rss_mb'))} | {_fmt(run.get('lag_s_max'))} | {_fmt(run.get('lag_messages_max'))} | "
            f"{_fmt(tel.get('p50_ms'))} / {_fmt(tel.get('p99_ms'))} | {_fmt((lg.get('hb_rtt') or {}).get('p99_ms'))} | "
            f"{_fmt(lg.get('hb_late'))} | {_fmt(run.get('wrongly_desconectado'))} | {_fmt(run.get('billing_errors'))} | "
            f"{_fmt(run.get('ramp_s'))} | {_fmt(run.get('broker_cpu_pct'))} | {_fmt(run.get('loadgen_cpu_pct'))} | "
            f"{_fmt(run.get('others_cpu_pct'))} | {_fmt(run.get('machine_cpu_pct'))} |"
        )
    lines.append("")
    failing = [run for run in r["runs"] if not run["holds"]]
    for run in failing:
        lines.append(f"- N = {run['n']:,} fails: " + "; ".join(run["failures"]) + ".")
    if failing:
        lines.append("")
    lines += ["Commands:", ""]
    lines += [f"- N = {run['n']:,}: `{run['command']}` ({run['date']})" for run in r["runs"]]
    lines += ["", f"![scaling curve](bench/{PLOT.name})", ""]
    return lines


def memory_section(d: dict[str, Any] | None) -> list[str]:
    if d is None:
        return []
    m = d["results"].get("memory") or {}
    per_conn = [
        f"N = {run['n']:,}: {_fmt(run.get('rss_per_connection_kb'))} KB"
        for run in d["results"]["runs"]
        if run.get("rss_per_connection_kb") is not None
    ]
    return [
        "## Memory per connected CP",
        "",
        f"- Slope of Central's RSS (steady, supplying) over N: **{_fmt(m.get('rss_slope_kb_per_cp'))} KB per CP** "
        f"(intercept {_fmt(m.get('rss_intercept_mb'))} MB).",
        f"- Slope of the RSS with the CPs loaded from the database, before any connection: "
        f"{_fmt(m.get('loaded_slope_kb_per_cp'))} KB per CP.",
        "- RSS growth from connecting and authenticating every Monitor, per CP: "
        + ("; ".join(per_conn) or "–")
        + ".",
        "",
    ]


def time_section(steady: dict[str, Any] | None, ramp: dict[str, Any] | None) -> list[str]:
    lines = ["## Where the time goes", ""]
    if NOTES.exists():
        notes = NOTES.read_text(encoding="utf-8").strip()
        notes = notes.removeprefix("## Where the time goes").strip()  # the heading is ours
        lines += [notes, ""]
    else:
        lines += [
            "_To be written from the profiles (keep it in docs/bench/where-the-time-goes.md)._",
            "",
        ]
    for phase, profile in (("steady state", steady), ("the ramp (burst of authorisations)", ramp)):
        lines += _profile_tables(phase, profile)
    return lines


def _profile_tables(phase: str, profile: dict[str, Any] | None) -> list[str]:
    prof = _get(profile, "results", "profile")
    if not prof or "self" not in prof:
        return [
            f"No py-spy profile of {phase} yet: `python -m bench profile --n 2000 --phase ...`.",
            "",
        ]
    assert profile is not None
    r = profile["results"]
    lines = [
        f"### py-spy: Central during {phase}, N = {r.get('n'):,}",
        "",
        f"{prof['samples']:,} samples at {profile['parameters'].get('rate_hz')} Hz over {prof.get('seconds')} s "
        f"(Central busy {prof['busy_pct_of_one_core']} % of one core while sampled; "
        f"stacks in `{prof.get('folded')}`, for a flame graph). "
        f"Measured {profile['date']} with `{profile['command']}`.",
        "",
        "| by library (innermost frame) | % of samples |",
        "|---|---|",
    ]
    lines += [f"| {row['function']} | {row['pct']} |" for row in prof["by_area"]]
    lines += ["", "| top functions, self time | % |", "|---|---|"]
    lines += [f"| `{row['function']}` | {row['pct']} |" for row in prof["self"][:10]]
    lines += ["", "| top functions, inclusive | % |", "|---|---|"]
    lines += [f"| `{row['function']}` | {row['pct']} |" for row in prof["inclusive"][:10]]
    return [*lines, ""]


def _kept(path: Path) -> list[str]:
    """A section written by hand (figures not from `bench/`), included as it is."""
    return [path.read_text(encoding="utf-8").strip(), ""] if path.exists() else []


def plot(scale: dict[str, Any] | None) -> Path | None:
    """CPU %, RSS and telemetry p99 against N (log scale); failing runs marked with a cross."""
    runs = (scale or {}).get("results", {}).get("runs") or []
    if not runs:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no %s (pip install matplotlib)", PLOT.name)
        return None

    ns = [r["n"] for r in runs]
    series = [
        ("Central CPU % (100 = one core)", [r.get("central_cpu_pct") for r in runs], None),
        ("Central RSS (MB)", [r.get("central_rss_mb") for r in runs], None),
        (
            "telemetry -> screen p99 (ms)",
            [(r.get("telemetry_to_screen") or {}).get("p99_ms") for r in runs],
            1000,
        ),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, (title, ys, limit) in zip(axes, series, strict=True):
        pts = [(n, y, r["holds"]) for n, y, r in zip(ns, ys, runs, strict=True) if y is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color="tab:blue")
        bad = [p for p in pts if not p[2]]
        ax.plot(
            [p[0] for p in bad],
            [p[1] for p in bad],
            "x",
            color="tab:red",
            markersize=12,
            label="fails",
        )
        if limit:
            ax.axhline(limit, color="tab:red", linestyle="--", linewidth=1, label="limit")
            ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel("N supplying CPs")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if bad or limit:
            ax.legend()
    fig.suptitle("EV_Central scaling on this machine (docs/bench/scale.json)")
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)
    return PLOT


def write() -> Path:
    names = ("auth", "fault", "telemetry", "scale", "profile-steady", "profile-ramp")
    data = {name: read_result(name) for name in names}
    machine: dict[str, Any] = next((d["machine"] for d in data.values() if d), {})
    lines = [
        "# Performance",
        "",
        "Generated by `python -m bench report` from `docs/bench/*.json` (written by `make bench` / "
        "`python -m bench`); do not edit by hand, except docs/bench/where-the-time-goes.md.",
        "",
        f"Machine: {machine.get('cpus')} cores ({machine.get('cpu_model')}), {machine.get('memory_gib')} GiB, "
        f"Linux {machine.get('kernel')}, Python {machine.get('python')}. Broker, Central and the load "
        "generator all run on it, so they share the cores.",
        "",
        *targets_section(data),
        *auth_section(data["auth"]),
        *fault_section(data["fault"]),
        *telemetry_section(data["telemetry"]),
        *scale_section(data["scale"]),
        *memory_section(data["scale"]),
        *report_encryption.section(),
        *_kept(WEATHER),
        *report_ocpp.section(),
        *time_section(data["profile-steady"], data["profile-ramp"]),
        "## How to run",
        "",
        "- `make bench` (= `python -m bench`): everything, under 15 minutes; then this file.",
        "- `python -m bench --quick`: a smoke run with small N and short windows (writes the same files).",
        "- `python -m bench auth | fault | telemetry | scale [--n 1000 ...] | profile --n 1000 | report`.",
        "- `--encryption on|off`: per-CP keys on (the default) or off (`EV_Central --cp-encryption off`, "
        "the comparison mode); `--encryption both` alternates them in one sitting (`auth`, `holds`).",
        "- `python -m bench encryption`: the whole comparison of issue 14 in one sitting (`seal`, then "
        "`auth --encryption both`, then `holds`); `python -m bench holds --n 3000 --n 5000 [--repeat 3]`: "
        "each N `--repeat` times per mode; `python -m bench seal`: encrypt+decrypt per message.",
        "- `python -m bench ocpp [--n 500 ...] [--py-spy]`: OCPP chargers against one EV_OCPP "
        "(issue 16), N stepped up until it fails; not part of `make bench` (its ramp costs one "
        "scrypt per charger).",
        "- `--kafka HOST:PORT` uses a running broker instead of starting one; `--keep` keeps the work "
        "folder (`.run/bench/...`: Central's and the generator's logs).",
        "",
    ]
    plot(data["scale"])
    OUT.write_text("\n".join(lines), encoding="utf-8")
    log.info("wrote %s", shown(OUT))
    return OUT
