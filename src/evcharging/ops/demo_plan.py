"""What `evcharging demo` starts, and how its merged output reads: pure, unit-tested.

The network: exactly the drivers the demo starts are seeded, and exactly the CPs it starts register
themselves at EV_Registry over HTTPS (each Monitor with `--register` and its row's location and
price), so no CP tile stays grey and none is known without credentials.  Each driver gets its own CPs (the CPs are
dealt out like cards), so no driver asks for a CP another one is using: requests are not denied
for "CP busy" unless there are more drivers than CPs.  Each driver's services file goes round its
CPs for longer than a demo runs (`SERVICES_PER_DRIVER`, at least ~11 h), and its balance pays for
all of them, so the demo stays busy until Ctrl+C or `--for`.

The real charger: EV_OCPP (the OCPP 1.6J gateway) runs too, and one real OCPP charger connects
to it, ocpp-go's example charge point (a Go program, `OCPP_CHARGER`): its CP is registered at
EV_Registry like the others, and the one idTag it charges for is seeded as a driver.  It runs one
scripted session (~35 s), idles 5 minutes and leaves; the demo starts it again each time.

The output: every program logs `DATE TIME,ms PROGRAM LEVEL logger: message`; the merged terminal
shows `label | message` (what matters within 80 columns), and leaves out the Engines' per-second
readings, which the drivers' PROGRESS lines repeat.  Each program's full log is kept in a file.
"""

from __future__ import annotations

import random
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample_network.yaml"
CITIES = ("Alicante", "Valencia", "Madrid", "Barcelona", "Murcia", "Sevilla")

SUPPLY_SECONDS = (6, 12)  # each Engine unplugs after a fixed time in this range
PAUSE_SECONDS = 4  # the Driver's pause between services (mechanic 12)
SERVICES_PER_DRIVER = 4000  # >= 4000 x (6 + 4) s, about 11 h at the fastest
# Pays for every service even at the dearest: 12 s x60 speed-up at 22 kW = 4.4 kWh, x 0.49 €/kWh.
DEMO_BALANCE = Decimal("10000.00")


@dataclass(frozen=True)
class DriverPlan:
    driver_id: str
    cps: tuple[str, ...]  # the CPs it uses (its own, unless drivers outnumber CPs)
    services: tuple[str, ...]  # its services file: its CPs, round and round

    def services_text(self) -> str:
        head = (
            f"# Services of driver {self.driver_id} in `evcharging demo`: its CPs "
            f"({', '.join(self.cps)}) in turn, more services than a demo runs.\n"
        )
        return head + "\n".join(self.services) + "\n"


@dataclass(frozen=True)
class OcppPlan:
    """The real OCPP charger's CP: what the demo registers for it, and the driver it charges."""

    cp_row: dict[str, str]  # id, location, price: registered at EV_Registry by the demo
    id_tag: str  # the driver the charger's sessions bill

    @property
    def cp_id(self) -> str:
        return self.cp_row["id"]


@dataclass(frozen=True)
class NetworkPlan:
    seed: dict[str, Any]  # what Central is seeded with: only the drivers the demo starts
    cp_rows: tuple[dict[str, str], ...]  # each CP's id, location, price: what it registers with
    cps: tuple[str, ...]
    supply_seconds: dict[str, int]  # per CP: the Engine's --supply-seconds
    drivers: tuple[DriverPlan, ...]
    ocpp: OcppPlan | None = None  # the real OCPP charger, when there is one

    @property
    def shared(self) -> bool:
        """More drivers than CPs: some share a CP, and may find it busy."""
        return len(self.drivers) > len(self.cps)


def deal(cps: list[str], drivers: int) -> list[tuple[str, ...]]:
    """Each driver's CPs: dealt round (driver i gets CPs i, i+n, ...); shared only if unavoidable."""
    if not cps:
        return [() for _ in range(drivers)]
    if drivers > len(cps):
        return [(cps[i % len(cps)],) for i in range(drivers)]
    return [tuple(cps[i::drivers]) for i in range(drivers)]


def plan_network(
    cps: int,
    drivers: int,
    sample: dict[str, Any] | None = None,
    services_per_driver: int = SERVICES_PER_DRIVER,
) -> NetworkPlan:
    """The sample network's first `cps` CPs and `drivers` drivers, grown with generated ones."""
    if sample is None:
        sample = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    cp_rows = [dict(row) for row in sample["charging_points"][:cps]]
    for i in range(len(cp_rows), cps):
        city = CITIES[i % len(CITIES)]
        cp_rows.append(
            {
                "id": f"CP{i + 1:03d}",
                "location": f"{city} - Demo {i + 1}",
                "price_eur_per_kwh": "0.40",
            }
        )
    driver_rows = [
        {"id": row["id"], "name": row["name"], "balance_eur": str(DEMO_BALANCE)}
        for row in sample["drivers"][:drivers]
    ]
    for i in range(len(driver_rows), drivers):
        driver_rows.append(
            {"id": f"D{i + 1:03d}", "name": f"Driver {i + 1}", "balance_eur": str(DEMO_BALANCE)}
        )
    cp_ids = [str(row["id"]) for row in cp_rows]
    rng = random.Random(7)  # the same supply times on every run
    supply = {cp: rng.randint(*SUPPLY_SECONDS) for cp in cp_ids}
    plans = tuple(
        DriverPlan(
            str(row["id"]),
            own,
            tuple(own[k % len(own)] for k in range(services_per_driver)) if own else (),
        )
        for row, own in zip(driver_rows, deal(cp_ids, drivers), strict=True)
    )
    seed = {"drivers": driver_rows}
    return NetworkPlan(seed, tuple(cp_rows), tuple(cp_ids), supply, plans)


# --- the weather (EV_W and the local weather service) -------------------------------------

FREEZING_CITY = "Teruel"  # the demo's one city that freezes and thaws
FREEZING_LOCATION = "Teruel - Plaza del Torico"
# At -4 °C for 20 s, then 6 °C for 20 s: a supply (6-12 s) that the alert catches finishes, the
# CP is Parado "weather alert" for a while, then Activado again, all within the first minute.
FREEZING_CYCLE = (-4.0, 6.0, 40)


@dataclass(frozen=True)
class WeatherPlan:
    locations: dict[str, str]  # EV_W's locations file: CP id -> city
    cities: dict[str, float]  # the local weather service's temperatures (the mild ones)
    cycle: str  # its --cycle CITY:LOW:HIGH:SECONDS

    def locations_text(self) -> str:
        return yaml.safe_dump(self.locations, sort_keys=False, allow_unicode=True)

    def cities_text(self) -> str:
        return yaml.safe_dump(self.cities, sort_keys=False, allow_unicode=True)


def city_of(location: str) -> str:
    """The city of a CP's location ("Alicante - Playa San Juan" -> "Alicante")."""
    return location.split(" - ", 1)[0].strip()


def with_freezing_city(plan: NetworkPlan) -> NetworkPlan:
    """The same network with its last CP moved to the freezing city (what it registers with)."""
    if not plan.cp_rows:
        return plan
    *rest, last = plan.cp_rows
    moved = {**last, "location": FREEZING_LOCATION}
    return replace(plan, cp_rows=(*rest, moved))


def plan_weather(plan: NetworkPlan) -> WeatherPlan:
    """Every CP in its location's city; every city mild but the freezing one, which cycles."""
    rows = [*plan.cp_rows, *([plan.ocpp.cp_row] if plan.ocpp else [])]
    locations = {str(row["id"]): city_of(str(row["location"])) for row in rows}
    mild = sorted({city for city in locations.values() if city != FREEZING_CITY})
    cities = {city: 14.0 + 2.0 * i for i, city in enumerate(mild)}
    low, high, seconds = FREEZING_CYCLE
    return WeatherPlan(locations, cities, f"{FREEZING_CITY}:{low:g}:{high:g}:{seconds}")


# --- the real OCPP charger (EV_OCPP and ocpp-go's example charge point) ---------------------

# Built by scripts/build-ocpp-go-cp.sh (`make ocpp-go-cp`, needs Go); relative to where the demo
# is started (the repository, for `make demo`).
OCPP_CHARGER = Path(".cache/ocpp-go/cp16")
OCPP_CP_ROW = {
    "id": "OCPP01",
    "location": "Valencia - OCPP charger",
    "price_eur_per_kwh": "0.45",
}
OCPP_ID_TAG = "12345"  # the only idTag ocpp-go's example charge point charges for
# After a whole run (its session, then 5 minutes idle) it starts again at once; when it leaves
# early (it could not connect, or gave up on an answer), each wait is twice the last, to a minute.
RESTART_SECONDS = (2.0, 60.0)
WHOLE_RUN = 60.0


def with_ocpp_charger(plan: NetworkPlan) -> NetworkPlan:
    """The same network plus the OCPP charger's CP and its idTag seeded as a driver (with the
    demo's balance: a session of the example CP costs cents)."""
    driver = {"id": OCPP_ID_TAG, "name": "OCPP charger's driver", "balance_eur": str(DEMO_BALANCE)}
    seed = {**plan.seed, "drivers": [*plan.seed["drivers"], driver]}
    return replace(plan, seed=seed, ocpp=OcppPlan(dict(OCPP_CP_ROW), OCPP_ID_TAG))


def charger_env(
    base: Mapping[str, str], cp_id: str, url: str, *, ca: Path, cert: Path, key: Path
) -> dict[str, str]:
    """The environment of ocpp-go's example CP on OCPP security profile 3: it connects to
    URL + "/" + CLIENT_ID over wss, checks the server against `ca`, and proves who it is with
    the client certificate `cert`/`key` (CN = the CP id).  Variables of the same families in
    `base` are dropped, so the demo's own environment cannot change what it does."""
    own = ("CLIENT_", "CA_", "TLS_", "CENTRAL_SYSTEM_")
    return {
        **{k: v for k, v in base.items() if not k.startswith(own)},
        "CLIENT_ID": cp_id,
        "CENTRAL_SYSTEM_URL": url.rstrip("/"),
        "TLS_ENABLED": "true",
        "CA_CERTIFICATE_PATH": str(ca),
        "CLIENT_CERTIFICATE_PATH": str(cert),
        "CLIENT_CERTIFICATE_KEY_PATH": str(key),
    }


def restart_delay(ran: float, previous: float | None) -> float:
    """Seconds before starting the charger again, after a run of `ran` seconds."""
    first, longest = RESTART_SECONDS
    if ran >= WHOLE_RUN or previous is None:
        return first
    return min(previous * 2, longest)


# --- the merged output ----------------------------------------------------------------------

_LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} UTC \S+ (?P<level>[A-Z]+) (?P<logger>\S+): "
    r"(?P<message>.*)$"
)
_UUID = re.compile(r"\b([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_ENGINE_READING = re.compile(r"^cp=\S+ driver=\S+ session=\S+: Suministrando ")
_LEVELS = {"WARNING": "warning: ", "ERROR": "error: ", "CRITICAL": "error: "}
# logrus's text lines (the Go charger): time="..." level=error msg="..." key=value ...
_LOGRUS_LINE = re.compile(
    r'^time="[^"]*" level=(?P<level>\w+) msg=(?P<message>"(?:[^"\\]|\\.)*"|\S*)(?P<fields>.*)$'
)
_LOGRUS_LEVELS = {
    "warning": "warning: ",
    "error": "error: ",
    "fatal": "error: ",
    "panic": "error: ",
}


def compact(line: str, cp_id: str | None = None) -> str | None:
    """A program's log line as the merged terminal shows it; None when it is left out.

    Drops the date, time, program and logger (the label says who; times: the summary lines),
    shortens session ids to their first 8 characters, drops `cp=ID` on a line of that CP's own
    programs, and marks warnings and errors.  Lines that are not log lines pass unchanged.
    """
    match = _LOG_LINE.match(line)
    if match is None:
        return _compact_logrus(line)
    message = match["message"]
    if match["logger"].endswith("services.engine") and _ENGINE_READING.match(message):
        return None
    message = _UUID.sub(r"\1", message)
    if cp_id is not None:
        for prefix in (f"cp={cp_id}: ", f"cp={cp_id} "):
            if message.startswith(prefix):
                message = message[len(prefix) :]
                break
    return _LEVELS.get(match["level"], "") + message


def _compact_logrus(line: str) -> str:
    """A Go program's logrus line as `level: message fields`; other lines unchanged."""
    match = _LOGRUS_LINE.match(line)
    if match is None:
        return line
    message = match["message"]
    if message.startswith('"'):
        message = message[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    fields = match["fields"].strip()
    level = _LOGRUS_LEVELS.get(match["level"], "")
    return level + message + (f" ({fields})" if fields else "")


def render(label: str, message: str, label_width: int, width: int | None = None) -> list[str]:
    """`label | message`; wrapped under the message to `width` columns when one is given."""
    head = f"{label:<{label_width}} | "
    if width is None or len(head) + len(message) <= width:
        return [head + message]
    room = max(width - len(head), 20)
    rows = textwrap.wrap(message, room, subsequent_indent="  ", break_on_hyphens=False) or [""]
    blank = f"{'':<{label_width}} | "
    return [head + rows[0], *(blank + row for row in rows[1:])]
