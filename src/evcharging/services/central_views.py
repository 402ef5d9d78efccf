"""Central's outward face: read-only, typed views of its state, and the change events that carry them.

The HTTP API, the dashboards' WebSocket and the terminal panel all read Central through these, so
the three show the same figures. Each view is built once per change and read many times: it wraps
the JSON-ready dict the wire carries (`.json`, computed when the view is built) and reads its typed
attributes from it. At bench sizes the WebSocket pushes thousands of CP views a second; a frozen
dataclass cost 50 % more to build and 3.5x more to encode with orjson (measured).

The `*Json` TypedDicts are the wire shapes (the API declares them as its response models, so
`/docs` shows them); never mutate a view's `.json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Generic, NamedTuple, NotRequired, TypeVar, cast, overload

from typing_extensions import TypedDict

from evcharging.domain.admin_rules import allowed_actions
from evcharging.domain.cp_state import (
    CPFacts,
    CPState,
    StopReason,
    derive_state,
    is_available,
    stop_reasons,
)
from evcharging.domain.records import CPRecord, DriverRecord
from evcharging.domain.session import Session
from evcharging.services.central_keys import KeyState
from evcharging.services.central_live import LiveCP, RequestRow

# --- the wire shapes ------------------------------------------------------------------------


class CPJson(TypedDict):
    id: str
    location: str
    price_eur_per_kwh: str
    state: str
    caption: str
    colour: str
    tone: str
    available: bool
    registered: bool
    key: str
    key_version: int | None
    admin_stopped: bool
    error_simulated: bool
    keys_revoked: bool
    weather_alert: bool
    weather: WeatherNoteJson | None  # the city and reading of EV_W's alert, while it stands
    actions: list[str]
    fault_reason: str | None
    stop_reason: str | None
    driver_id: str | None
    session_id: str | None
    session_status: str | None
    kw: str | None
    energy_kwh: str | None
    amount_eur: str | None


class WeatherNoteJson(TypedDict):
    city: str
    temperature_c: float | None


class RequestJson(TypedDict):
    key: str
    date: str
    start: str
    driver_id: str
    cp_id: str
    status: str


class MessageJson(TypedDict):
    at: str
    level: str
    text: str


class SessionJson(TypedDict):
    session_id: str
    driver_id: str
    cp_id: str
    status: str
    price_eur_per_kwh: str
    energy_kwh: str
    amount_eur: str
    started_at: str
    ended_at: str | None
    end_reason: str | None


class DriverJson(TypedDict):
    id: str
    name: str
    balance_eur: str


class SkippedJson(TypedDict):
    id: str
    reason: str


class BulkJson(TypedDict):
    changed: list[CPJson]
    skipped: list[SkippedJson]


class RotationJson(TypedDict):
    asked: list[str]  # the CPs asked to authenticate again for a new key


class AuditJson(TypedDict):
    """A row of the audit log (`adapters.audit_file.as_json`: the file's shape too)."""

    at: str  # ISO 8601, UTC
    action: str  # an AuditAction value
    actor: str  # "cp:<id>", "admin", "anonymous", "driver:<id>", "central", ...
    ip: str  # "-" when none (Kafka, Central itself)
    outcome: str  # ok, denied or error
    cp_id: str | None
    detail: str
    params: dict[str, str]
    seq: NotRequired[int]  # the database's row number


# --- the views ------------------------------------------------------------------------------

J = TypeVar("J", CPJson, RequestJson, MessageJson, SessionJson, DriverJson)


T = TypeVar("T")


class _Wire(Generic[T]):
    """A view's attribute read straight from its wire dict, under the same name (one line per
    field instead of a property each)."""

    __slots__ = ("key",)

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    @overload
    def __get__(self, view: None, owner: type) -> _Wire[T]: ...
    @overload
    def __get__(self, view: _View[Any], owner: type) -> T: ...
    def __get__(self, view: _View[Any] | None, owner: type) -> _Wire[T] | T:
        if view is None:
            return self
        value: T = cast(Mapping[str, Any], view.json)[self.key]
        return value


class _View(Generic[J]):
    """A frozen view around its wire dict: equal when the dicts are, never changed after."""

    __slots__ = ("_json",)
    _json: J

    def __init__(self, json: J) -> None:
        object.__setattr__(self, "_json", json)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    @property
    def json(self) -> J:
        """The wire shape (shared: read it, encode it, never change it)."""
        return self._json

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._json == self._json  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._json!r})"


class CPView(_View[CPJson]):
    """A CP as the API, the dashboards and the panel show it."""

    __slots__ = ()

    id = _Wire[str]()
    location = _Wire[str]()
    price_eur_per_kwh = _Wire[str]()

    @property
    def state(self) -> CPState:
        return CPState(self._json["state"])

    caption = _Wire[str]()
    colour = _Wire[str]()  # green, orange, red or grey (the statement's colours).
    tone = _Wire[str]()  # ok, stopped, fault or off: what the admin page styles a tile by.
    available = _Wire[bool]()
    registered = _Wire[bool]()  # has credentials from EV_Registry (else its Monitor is denied)
    key = _Wire[str]()  # "key v3", "no key" or "keys revoked": never the key itself
    key_version = _Wire[int | None]()  # the key in use (the newest Central holds)
    admin_stopped = _Wire[bool]()
    error_simulated = _Wire[bool]()
    keys_revoked = _Wire[bool]()  # "restaurar claves": Parado until its Monitor re-authenticates

    @property
    def actions(self) -> tuple[str, ...]:
        """The admin actions that make sense now (what the admin page enables)."""
        return tuple(self._json["actions"])

    fault_reason = _Wire[str | None]()
    stop_reason = _Wire[str | None]()  # why Parado: "stopped by Central", "keys revoked"
    driver_id = _Wire[str | None]()
    session_id = _Wire[str | None]()
    session_status = _Wire[str | None]()
    kw = _Wire[str | None]()
    energy_kwh = _Wire[str | None]()
    amount_eur = _Wire[str | None]()


class RequestView(_View[RequestJson]):
    """A line of the table of ongoing driver requests; `key` identifies it."""

    __slots__ = ()

    key = _Wire[str]()
    date = _Wire[str]()
    start = _Wire[str]()  # HH:MM:SS, UTC.
    driver_id = _Wire[str]()
    cp_id = _Wire[str]()
    status = _Wire[str]()


class MessageView(_View[MessageJson]):
    """One of Central's application messages."""

    __slots__ = ("_at",)
    _at: datetime

    def __init__(self, at: datetime, level: str, text: str) -> None:
        super().__init__({"at": at.isoformat(), "level": level, "text": text})
        object.__setattr__(self, "_at", at)

    @property
    def at(self) -> datetime:
        return self._at

    level = _Wire[str]()  # info or warning.
    text = _Wire[str]()

    @property
    def line(self) -> tuple[datetime, str, str]:
        """(when, level, text): the shape of a log line on the panel."""
        return self._at, self._json["level"], self._json["text"]


class SessionView(_View[SessionJson]):
    """A supply session, open or ended, as the API lists it."""

    __slots__ = ()

    session_id = _Wire[str]()
    driver_id = _Wire[str]()
    cp_id = _Wire[str]()
    status = _Wire[str]()
    energy_kwh = _Wire[str]()
    amount_eur = _Wire[str]()


class DriverView(_View[DriverJson]):
    """A driver's account as Central knows it."""

    __slots__ = ()

    id = _Wire[str]()
    name = _Wire[str]()
    balance_eur = _Wire[str]()


@dataclass(frozen=True, slots=True)
class Skipped:
    """A CP a bulk action left alone, and why."""

    cp_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    """What STOP ALL / RESUME ALL did: the CPs changed (their new views) and those skipped."""

    changed: tuple[CPView, ...]
    skipped: tuple[Skipped, ...]

    @property
    def json(self) -> BulkJson:
        return {
            "changed": [view.json for view in self.changed],
            "skipped": [{"id": s.cp_id, "reason": s.reason} for s in self.skipped],
        }


# --- building them from the service's state --------------------------------------------------

_TONES = {
    CPState.DESCONECTADO: "off",
    CPState.ACTIVADO: "ok",
    CPState.SUMINISTRANDO: "ok",
    CPState.PARADO: "stopped",
    CPState.AVERIADO: "fault",
}


KEYS_REVOKED = StopReason.KEYS_REVOKED.value
NO_KEY = "no key"


class _Facets(NamedTuple):
    state: str
    caption: str
    colour: str
    tone: str
    available: bool
    actions: tuple[str, ...]
    faulted: bool
    stop_reason: str | None


def _stop_reason(facts: CPFacts) -> str | None:
    """Why a Parado CP is out of service (every reason, when there are several)."""
    if derive_state(facts) is not CPState.PARADO:
        return None
    return "; ".join(stop_reasons(facts))


@lru_cache(maxsize=256)  # CPFacts is eight booleans: 256 combinations; a view is built per reading
def _facets(facts: CPFacts) -> _Facets:
    """Everything of a CP's view that follows from its facts alone."""
    state = derive_state(facts)
    return _Facets(
        state.value,
        state.caption,
        state.colour,
        _TONES[state],
        is_available(facts),
        allowed_actions(facts),
        state is CPState.AVERIADO,
        _stop_reason(facts),
    )


@lru_cache(maxsize=1024)
def _key_text(version: int | None) -> str:
    return NO_KEY if version is None else f"key v{version}"


def _weather_note(record: CPRecord) -> WeatherNoteJson:
    return {"city": record.weather_city or "", "temperature_c": record.weather_temperature_c}


def cp_view(cp: LiveCP, key: KeyState | None = None) -> CPView:
    """`key`: the CP's key state as Central's keys say (None: this Central holds no keys)."""
    f = _facets(cp.facts)
    s = cp.session
    record = cp.record
    revoked = cp.facts.keys_revoked
    version = None if revoked or key is None else key.version
    return CPView(
        {
            "id": record.cp_id,
            "location": record.location,
            "price_eur_per_kwh": str(record.price_eur_per_kwh),
            "state": f.state,
            "caption": f.caption,
            "colour": f.colour,
            "tone": f.tone,
            "available": f.available,
            "registered": cp.registered,
            "key": KEYS_REVOKED if revoked else _key_text(version),
            "key_version": version,
            "admin_stopped": cp.facts.admin_stopped,
            "error_simulated": cp.facts.error_simulated,
            "keys_revoked": revoked,
            "weather_alert": cp.facts.weather_alert,
            "weather": _weather_note(record) if cp.facts.weather_alert else None,
            "actions": list(f.actions),
            "fault_reason": cp.fault_reason if f.faulted else None,
            "stop_reason": f.stop_reason,
            "driver_id": s.driver_id if s else None,
            "session_id": s.session_id if s else None,
            "session_status": s.status.value if s else None,
            "kw": str(cp.kw) if s else None,
            "energy_kwh": str(s.energy_kwh) if s else None,
            "amount_eur": str(s.amount_eur) if s else None,
        }
    )


def request_view(key: str, r: RequestRow) -> RequestView:
    return RequestView(
        {
            "key": key,
            "date": r.at.date().isoformat(),
            "start": r.at.strftime("%H:%M:%S"),
            "driver_id": r.driver_id,
            "cp_id": r.cp_id,
            "status": r.status,
        }
    )


def session_view(s: Session) -> SessionView:
    return SessionView(
        {
            "session_id": s.session_id,
            "driver_id": s.driver_id,
            "cp_id": s.cp_id,
            "status": s.status.value,
            "price_eur_per_kwh": str(s.price_eur_per_kwh),
            "energy_kwh": str(s.energy_kwh),
            "amount_eur": str(s.amount_eur),
            "started_at": s.started_at.isoformat(),
            "ended_at": s.ended_at.isoformat() if s.ended_at else None,
            "end_reason": s.end_reason.value if s.end_reason else None,
        }
    )


def driver_view(d: DriverRecord) -> DriverView:
    return DriverView({"id": d.driver_id, "name": d.name, "balance_eur": str(d.balance_eur)})


# --- change events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CPChanged:
    """A CP's view changed (state, figures, record)."""

    view: CPView


@dataclass(frozen=True, slots=True)
class RequestChanged:
    """A request row changed; `view` None: it left the table (its supply ended or was denied)."""

    key: str
    view: RequestView | None


@dataclass(frozen=True, slots=True)
class MessageAdded:
    view: MessageView


CentralChange = CPChanged | RequestChanged | MessageAdded
