"""The cost of encryption (issue 14, point 6), measured side by side in one sitting.

Both modes run alternately on the same machine and broker (on, off, off, on, ...), each run
against a fresh Central (`--cp-encryption off` for off; the load generator mirrors it), so a
busy spell weighs on both alike:

- `auth`: authorisation latency (`bench.auth`), `repeat` runs per mode; p99 over every request
  of a mode's runs, and each run's own.
- `holds`: for each N, `repeat` scale runs per mode (`bench.scale.measure`, criteria unchanged).
  A mode holds at N when `repeat` consecutive runs there hold; its largest N is the largest N
  that holds with every smaller N of the list holding too. Once a run of a mode fails at N, that
  mode runs no more (neither N nor anything larger can hold for it). Central's CPU per message
  comes from the same runs (steady window, runs that held).

Ratios on/off for the three figures; the issue's budget is a cost of at most 10 % on each.
Results: docs/bench/encryption-auth.json, docs/bench/encryption-holds.json, written after every
run, so an interrupted sitting keeps what it measured.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench import auth, scale
from bench.context import Context
from bench.harness import command_line, read_result, utc_now, write_result
from bench.stats import summary_ms

log = logging.getLogger(__name__)

MODES = ("on", "off")
HOLD_SIZES = (3000, 5000, 7000, 10000)  # the busy-machine 3,000 and 5,000; 10,000 held here
QUICK_HOLD_SIZES = (50,)
REPEAT = 3
BUDGET = 0.10  # the issue's: encryption may cost at most 10 % on each figure
AUTH_FILE = "encryption-auth"
HOLDS_FILE = "encryption-holds"
DROPPED = ("timeline",)  # per-second detail of a scale run: not kept for every run here


def alternation(modes: Sequence[str], repeat: int) -> list[tuple[int, str]]:
    """(attempt, mode) in the order they run, counterbalanced (ABBA: on, off, off, on, on, off,
    ...): neither mode always runs first, on a machine that warms up or drifts during a sitting."""
    order: list[tuple[int, str]] = []
    for k in range(repeat):
        turn = modes if k % 2 == 0 else list(reversed(modes))
        order += [(k + 1, mode) for mode in turn]
    return order


def with_mode(ctx: Context, mode: str) -> Context:
    return replace(ctx, encryption=mode == "on")


# --- authorisation ------------------------------------------------------------------------------


async def auth_sitting(
    ctx: Context, params: auth.AuthParams, modes: Sequence[str], repeat: int
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    latencies: dict[str, list[float]] = {mode: [] for mode in modes}
    for attempt, mode in alternation(modes, repeat):
        log.info("authorisation, encryption %s, run %d of %d", mode, attempt, repeat)
        date = utc_now()
        try:
            figures, seen = await auth.measure(
                with_mode(ctx, mode), params, f"auth-{mode}-{attempt}"
            )
        except (RuntimeError, TimeoutError, OSError) as exc:
            log.exception("authorisation run (encryption %s) could not be measured", mode)
            runs.append({"mode": mode, "attempt": attempt, "date": date, "error": f"{exc!r}"[:300]})
            continue
        latencies[mode] += seen
        runs.append({"mode": mode, "attempt": attempt, "date": date, **figures})
        log.info("  p99 %s ms", (figures["request_to_response"] or {}).get("p99_ms"))
        results = {"runs": runs, "pooled": {m: summary_ms(v) for m, v in latencies.items()}}
        write_result(AUTH_FILE, {**asdict(params), "modes": list(modes), "repeat": repeat}, results)
    return {"runs": runs, "pooled": {m: summary_ms(v) for m, v in latencies.items()}}


# --- the largest N that holds -------------------------------------------------------------------


def compact(run: scale.Run, attempt: int) -> dict[str, Any]:
    out = {k: v for k, v in run.as_dict().items() if k not in DROPPED}
    out["attempt"] = attempt
    out["mode"] = run.figures.get("encryption")
    return out


async def holds_sitting(
    ctx: Context, params: scale.ScaleParams, modes: Sequence[str], repeat: int
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    skipped: list[str] = []
    out: dict[str, int] = {}  # mode -> the N at which one of its runs failed
    parameters = {
        **asdict(params),
        "sizes": list(params.sizes),
        "modes": list(modes),
        "repeat": repeat,
    }
    log.info(
        "holds: N %s, %d runs per mode (%s); at most about %.0f min",
        list(params.sizes),
        repeat,
        " / ".join(modes),
        sum(scale.estimated_s(n, params) for n in params.sizes) * repeat * len(modes) / 60,
    )
    for n in params.sizes:
        for attempt, mode in alternation(modes, repeat):
            if mode in out:
                continue
            log.info("holds: N=%d, encryption %s, run %d of %d", n, mode, attempt, repeat)
            try:
                run = await scale.measure(with_mode(ctx, mode), n, params, f"-{mode}-{attempt}")
            except (RuntimeError, TimeoutError, OSError) as exc:
                log.exception("holds: N=%d (encryption %s) could not be measured", n, mode)
                run = scale.Run(n, command_line(), failures=[f"not measured: {exc!r}"[:300]])
                run.figures["encryption"] = mode
            scale.log_run(run)
            runs.append(compact(run, attempt))
            if not run.holds:
                out[mode] = n
                skipped.append(
                    f"encryption {mode}: run {attempt} at N = {n:,} failed; no more runs "
                    "in this mode (it cannot hold there or above)"
                )
            write_result(HOLDS_FILE, parameters, holds_results(runs, modes, params.sizes, repeat))
        if len(out) == len(modes):
            break
    results = holds_results(runs, modes, params.sizes, repeat, skipped)
    write_result(HOLDS_FILE, parameters, results)
    return results


def holds_results(
    runs: list[dict[str, Any]],
    modes: Sequence[str],
    sizes: Sequence[int],
    repeat: int,
    notes: Iterable[str] = (),
) -> dict[str, Any]:
    return {
        "runs": runs,
        "verdict": {mode: verdict(runs, mode, sizes, repeat) for mode in modes},
        "cpu_per_message": cpu_table(runs, modes, sizes),
        "notes": list(notes),
        "criteria": f"each N: {repeat} consecutive runs hold (scale criteria: lag < "
        f"{scale.LAG_LIMIT_S:g} s, telemetry p99 to screen < {scale.TELEMETRY_LIMIT_S:g} s, "
        "no CP wrongly Desconectado, no billing error, every CP supplying)",
    }


def holds_at(runs: list[dict[str, Any]], mode: str, n: int, repeat: int) -> bool:
    """`repeat` consecutive runs of `mode` at `n` hold."""
    streak = 0
    for run in (r for r in runs if r.get("mode") == mode and r["n"] == n):
        streak = streak + 1 if run["holds"] else 0
        if streak >= repeat:
            return True
    return False


def verdict(
    runs: list[dict[str, Any]], mode: str, sizes: Sequence[int], repeat: int
) -> dict[str, Any]:
    """The largest N of `sizes` that holds, every smaller one holding too; and each N's tally."""
    per_n: dict[str, Any] = {}
    largest: int | None = None
    broken = False
    for n in sorted(sizes):
        mine = [r for r in runs if r.get("mode") == mode and r["n"] == n]
        held = holds_at(runs, mode, n, repeat)
        per_n[str(n)] = {
            "runs": len(mine),
            "held": sum(1 for r in mine if r["holds"]),
            "holds": held,
        }
        broken = broken or not held
        if not broken:
            largest = n
    tested = [n for n in sizes if per_n[str(n)]["runs"]]
    return {
        "largest_n": largest,
        "every_n_held": largest is not None and largest == max(sizes),  # a floor, not the limit
        "per_n": per_n,
        "tested": tested,
    }


def cpu_table(
    runs: list[dict[str, Any]], modes: Sequence[str], sizes: Sequence[int]
) -> list[dict[str, Any]]:
    """Per N: each mode's median CPU per message over its runs that held, and on/off."""
    rows = []
    for n in sorted(sizes):
        row: dict[str, Any] = {"n": n}
        for mode in modes:
            values = [
                r["central_cpu_us_per_message"]
                for r in runs
                if r.get("mode") == mode
                and r["n"] == n
                and r["holds"]
                and r.get("central_cpu_us_per_message")
            ]
            row[mode] = round(statistics.median(values), 1) if values else None
            row[f"{mode}_runs"] = len(values)
        row["ratio"] = ratio(row.get("on"), row.get("off"))
        if any(row.get(m) is not None for m in modes):
            rows.append(row)
    return rows


def ratio(on: float | None, off: float | None) -> float | None:
    if on is None or not off:
        return None
    return round(on / off, 3)


# --- the comparison the report shows ------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One of the three figures, per mode, with its ratio and whether it keeps the budget."""

    what: str
    on: float | None
    off: float | None
    unit: str
    higher_is_better: bool = False
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return ratio(self.on, self.off)

    @property
    def cost(self) -> float | None:
        """What encryption costs, as a fraction (0.04 = 4 % worse)."""
        r = self.ratio
        if r is None:
            return None
        return round(1 - r, 3) if self.higher_is_better else round(r - 1, 3)

    @property
    def within_budget(self) -> bool | None:
        cost = self.cost
        return None if cost is None else cost <= BUDGET


def comparison(auth_data: dict[str, Any] | None, holds_data: dict[str, Any] | None) -> list[Figure]:
    """Central's CPU per message, authorisation p99, the largest N that holds: on and off."""
    figures = []
    results = (holds_data or {}).get("results") or {}
    verdicts: dict[str, Any] = results.get("verdict") or {}

    def held(mode: str, n: int) -> bool:
        per_n = (verdicts.get(mode) or {}).get("per_n") or {}
        return bool((per_n.get(str(n)) or {}).get("holds"))

    both = [
        row
        for row in results.get("cpu_per_message") or []
        if row.get("on") is not None and row.get("off") is not None
    ]
    held_both = [row for row in both if all(held(m, row["n"]) for m in MODES)]
    ref: dict[str, Any] = (held_both or both or [{}])[-1]
    figures.append(
        Figure(
            "Central's CPU per message",
            ref.get("on"),
            ref.get("off"),
            " µs",
            note=f"at N = {ref['n']:,}, median of the runs that held" if ref else "",
        )
    )
    pooled = (auth_data or {}).get("results", {}).get("pooled") or {}
    figures.append(
        Figure(
            "authorisation p99",
            (pooled.get("on") or {}).get("p99_ms"),
            (pooled.get("off") or {}).get("p99_ms"),
            " ms",
            note="over every request of a mode's runs",
        )
    )
    on_v, off_v = verdicts.get("on") or {}, verdicts.get("off") or {}
    capped = [m for m, v in (("on", on_v), ("off", off_v)) if v.get("every_n_held")]
    figures.append(
        Figure(
            "largest N that holds",
            on_v.get("largest_n"),
            off_v.get("largest_n"),
            "",
            higher_is_better=True,
            note=(
                f"every N asked for held with encryption {' and '.join(capped)}: a floor"
                if capped
                else "three consecutive runs each"
            ),
        )
    )
    return figures


def summary(auth_data: dict[str, Any] | None, holds_data: dict[str, Any] | None) -> dict[str, Any]:
    return {
        f.what: {
            "on": f.on,
            "off": f.off,
            "ratio": f.ratio,
            "cost": f.cost,
            "within_budget": f.within_budget,
        }
        for f in comparison(auth_data, holds_data)
    }


def load() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    return read_result(AUTH_FILE), read_result(HOLDS_FILE)
