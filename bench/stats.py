"""Percentiles, consumer lag in seconds, the telemetry join and a straight-line fit: pure functions."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (`q` in 0..100); NaN when empty."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def summary_ms(seconds: Iterable[float]) -> dict[str, Any]:
    """Latencies in seconds -> n, mean, p50, p90, p99, max in milliseconds (inf = never seen)."""
    ordered = sorted(seconds)
    finite = [v for v in ordered if math.isfinite(v)]
    if not ordered:
        return {"n": 0}

    def ms(v: float) -> float | None:
        return round(v * 1000, 2) if math.isfinite(v) else None  # None: not seen at all

    return {
        "n": len(ordered),
        "mean_ms": ms(sum(finite) / len(finite)) if finite else None,
        "p50_ms": ms(percentile(ordered, 50)),
        "p90_ms": ms(percentile(ordered, 90)),
        "p99_ms": ms(percentile(ordered, 99)),
        "max_ms": ms(ordered[-1]),
        "never_seen": len(ordered) - len(finite),
    }


@dataclass(frozen=True)
class LagSample:
    """End offsets of the group's partitions, then its committed offsets, at time `t`."""

    t: float
    ends: Mapping[Any, int]
    committed: Mapping[Any, int]

    @property
    def messages(self) -> int:
        return sum(max(0, end - self.committed.get(tp, 0)) for tp, end in self.ends.items())


def lag_seconds(samples: Sequence[LagSample]) -> list[float]:
    """For each sample: how long until the group had committed everything that was then in the
    topics. Resolution is the sampling interval; a sample never caught up gives inf."""
    out: list[float] = []
    j = 0
    for i, sample in enumerate(samples):
        j = max(j, i)
        while j < len(samples) and not _covers(samples[j].committed, sample.ends):
            j += 1
        out.append(samples[j].t - sample.t if j < len(samples) else math.inf)
    return out


def _covers(committed: Mapping[Any, int], ends: Mapping[Any, int]) -> bool:
    return all(committed.get(tp, 0) >= end for tp, end in ends.items())


def telemetry_latencies(
    sent: Iterable[tuple[int, int, float]],
    seen: Mapping[int, tuple[Sequence[int], Sequence[float]]],
) -> list[float]:
    """Join readings sent (cp index, energy Wh, send time) with what the screen showed.

    `seen[cp]` holds the energies (non-decreasing, as Central keeps the largest reading) and the
    arrival times of the views of that CP. A reading is on screen when a view shows an energy at
    least as large: that reading, or a later one that superseded it. inf when never shown.
    """
    out: list[float] = []
    for cp, wh, t in sent:
        energies, times = seen.get(cp, ((), ()))
        k = bisect.bisect_left(energies, wh)
        out.append(max(0.0, times[k] - t) if k < len(energies) else math.inf)
    return out


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """Least-squares slope and intercept; None with fewer than two distinct x."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx
