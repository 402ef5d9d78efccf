"""EV_WeatherService's table of city temperatures: a YAML file (`Madrid: 12.5`, re-read when it
changes), the menu's `set`, and `--cycle` cities that freeze and thaw on a timer.

Why here and not in the web adapter: the menu, the file and the HTTP answers share one table.
A bad file is one line in the log and the table stays as it was; a `set` from the menu is
written back to the file (atomically), so the file stays the one truth and a later edit by hand
does not undo it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from evcharging.adapters.locations_file import (
    LocationsFileError,
    Stamp,
    city_problem,
    read_yaml_mapping,
    stamp,
    write_yaml_mapping,
)

log = logging.getLogger(__name__)

FAULTS = ("garbage", "slow", "500")  # what `fault CITY KIND` makes the service answer for a city


@dataclass(frozen=True)
class Cycle:
    """`CITY:LOW:HIGH:SECONDS`: LOW for the first half of each period, HIGH for the second."""

    city: str
    low: float
    high: float
    period: float

    @classmethod
    def parse(cls, value: str) -> Cycle:
        parts = value.strip().rsplit(":", 3)
        if len(parts) != 4 or city_problem(parts[0]):
            raise ValueError("expected CITY:LOW:HIGH:SECONDS, e.g. Teruel:-4:6:30")
        try:
            low, high, period = (float(p) for p in parts[1:])
        except ValueError:
            raise ValueError(
                "expected CITY:LOW:HIGH:SECONDS with numbers, e.g. Teruel:-4:6:30"
            ) from None
        if not all(math.isfinite(n) for n in (low, high, period)) or period <= 0:
            raise ValueError("expected CITY:LOW:HIGH:SECONDS with SECONDS > 0")
        return cls(parts[0].strip(), low, high, period)

    def at(self, elapsed: float) -> float:
        return self.low if elapsed % self.period < self.period / 2 else self.high


class CityTable:
    """City -> temperature in °C; names are matched without regard to case (as OpenWeather)."""

    def __init__(
        self,
        file: Path | None = None,
        cycles: tuple[Cycle, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.file = file
        self.cycles = {c.city.casefold(): c for c in cycles}
        self._clock = clock
        self._t0 = clock()
        self._temps: dict[str, tuple[str, float]] = {}  # folded name -> (name, °C)
        self._stamp: Stamp | None = None
        self._said = ""  # the file problem last logged (said once)
        self.faults: dict[str, str] = {}  # folded name -> one of FAULTS

    # --- the file -----------------------------------------------------------------------------

    def load(self) -> None:
        """Reads the file (at start: a bad file is a `LocationsFileError` for the caller)."""
        if self.file is None:
            return
        self._stamp = stamp(self.file)
        data = read_yaml_mapping(self.file)
        self._temps = _table(self.file, data or {})

    def refresh(self) -> None:
        """Reads the file again if it changed since; a bad edit is said once and ignored."""
        if self.file is None or stamp(self.file) == self._stamp:
            return
        try:
            self.load()
        except LocationsFileError as exc:
            if str(exc) != self._said:
                log.error("%s (the table stays as it was)", exc)
                self._said = str(exc)
            return
        self._said = ""
        log.info("%s changed: %d cities", self.file, len(self._temps))

    def _save(self) -> None:
        if self.file is None:
            return
        mapping = {name: temp for name, temp in sorted(self._temps.values())}
        write_yaml_mapping(self.file, mapping, "EV_WeatherService: temperature of each city, °C")
        self._stamp = stamp(self.file)

    # --- reading and setting ----------------------------------------------------------------

    def lookup(self, query: str) -> tuple[str, float] | None:
        """OpenWeather's `q` ('Madrid', 'madrid,ES') -> (the city's name, °C); None: unknown."""
        self.refresh()
        folded = query.split(",")[0].strip().casefold()
        cycle = self.cycles.get(folded)
        if cycle is not None:
            return cycle.city, cycle.at(self._clock() - self._t0)
        return self._temps.get(folded)

    def fault(self, query: str) -> str | None:
        return self.faults.get(query.split(",")[0].strip().casefold())

    def set(self, city: str, temperature_c: float) -> str:
        folded = city.casefold()
        if folded in self.cycles:
            return f"{city} follows --cycle; it cannot be set"
        name = self._temps.get(folded, (city, 0.0))[0]
        self._temps[folded] = (name, temperature_c)
        try:
            self._save()
        except LocationsFileError as exc:
            return f"{name} set to {temperature_c:g} °C, but {exc}"
        return f"{name} set to {temperature_c:g} °C"

    def set_fault(self, city: str, kind: str) -> str:
        folded = city.casefold()
        if kind == "none":
            return (
                f"{city}: answers normally"
                if self.faults.pop(folded, None)
                else f"{city} had no fault"
            )
        self.faults[folded] = kind
        return f"{city}: answers with a fault ({kind}) until `fault {city} none`"

    def listing(self) -> list[str]:
        self.refresh()
        lines = [f"{name:<24} {temp:6.1f} °C" for name, temp in sorted(self._temps.values())]
        elapsed = self._clock() - self._t0
        for cycle in self.cycles.values():
            now = cycle.at(elapsed)
            lines.append(
                f"{cycle.city:<24} {now:6.1f} °C  (cycle {cycle.low:g}/{cycle.high:g} °C, "
                f"{cycle.period:g} s)"
            )
        for folded, kind in sorted(self.faults.items()):
            lines.append(f"{folded:<24} fault: {kind}")
        return lines or ["no cities: set Madrid 12.5"]


def _table(file: Path, data: dict[object, object]) -> dict[str, tuple[str, float]]:
    table: dict[str, tuple[str, float]] = {}
    for key, value in data.items():
        name = str(key).strip()
        problem = city_problem(name)
        if problem:
            raise LocationsFileError(f"{file}: {problem}")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise LocationsFileError(f"{file}: {name}'s temperature must be a number (°C)")
        table[name.casefold()] = (name, float(value))
    return table
