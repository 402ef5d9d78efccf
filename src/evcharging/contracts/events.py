"""Every Kafka event of the network: one pydantic model each, inside a common envelope.

The envelope (`event_id`, `event_type`, `ts`, `source`, `v`) lets every handler be idempotent
(`event_id`) and every log line say where a message came from.  Each model names its topic and
the field that keys it, so per-entity order holds (one CP, one driver -> one partition).
Names follow the user's seed where it gives them (AUTHORIZATION_REQUEST, charging_stopped, ...).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, ClassVar, Literal, Union
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from evcharging.contracts.end_reasons import SupplyEndReason
from evcharging.contracts.fields import ErrorType, Id, Location, Price  # Id, Price: also from here
from evcharging.contracts.topics import (
    CENTRAL_EVENTS,
    CP_COMMANDS,
    CP_EVENTS,
    CP_STATUS,
    DRIVER_EVENTS,
    Topic,
)
from evcharging.domain.cp_state import CPState, StopReason
from evcharging.domain.session import EndReason

Energy = Annotated[Decimal, Field(ge=0, le=1000, decimal_places=3)]
Power = Annotated[Decimal, Field(ge=0, le=1000)]
Euros = Annotated[Decimal, Field(ge=0, le=100000)]
Text = Annotated[str, Field(max_length=500)]


def _now() -> datetime:
    return datetime.now(UTC)


_source = "unknown"


def set_default_source(name: str) -> None:
    """The `source` of events this process creates: set once by a program's main, so a publisher
    need not copy each event to stamp it (a measurable cost at thousands of events a second)."""
    global _source
    _source = name


def _default_source() -> str:
    return _source


class Event(BaseModel):
    """The envelope every event carries."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    TOPIC: ClassVar[Topic]
    KEY_FIELD: ClassVar[str]

    event_id: UUID = Field(default_factory=uuid4)
    event_type: str
    ts: datetime = Field(default_factory=_now)
    source: str = Field(default_factory=_default_source, max_length=100)
    v: Literal[1] = 1

    def key(self) -> str:
        return str(getattr(self, self.KEY_FIELD))

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


# --- driver-events: Driver (or a CP's menu) -> Central, keyed by driver id -------------------


class AuthorizationRequest(Event):
    """A driver asks to charge at a CP; `origin` says whether from the Driver app or the CP's menu."""

    TOPIC = DRIVER_EVENTS
    KEY_FIELD = "driver_id"
    event_type: Literal["AUTHORIZATION_REQUEST"] = "AUTHORIZATION_REQUEST"
    request_id: UUID = Field(default_factory=uuid4)
    driver_id: Id
    cp_id: Id
    origin: Literal["driver", "cp"] = "driver"


class ChargingStopped(Event):
    """The driver stops its own supply (seed flow 1)."""

    TOPIC = DRIVER_EVENTS
    KEY_FIELD = "driver_id"
    event_type: Literal["charging_stopped"] = "charging_stopped"
    driver_id: Id
    cp_id: Id | None = None
    session_id: UUID | None = None


class DriverStatusRequest(Event):
    """A Driver app (re)starting, or a page following a driver, asks what Central knows of it:
    whether the driver exists, its balance, and a supply it has open (e.g. started before a
    crash), so the app can show that supply and stop it."""

    TOPIC = DRIVER_EVENTS
    KEY_FIELD = "driver_id"
    event_type: Literal["DRIVER_STATUS_REQUEST"] = "DRIVER_STATUS_REQUEST"
    request_id: UUID = Field(default_factory=uuid4)
    driver_id: Id


# --- central-events: Central -> Drivers, keyed by driver id --------------------------------


class DriverStatus(Event):
    """Central's answer to DRIVER_STATUS_REQUEST: `known` false for a driver it does not have;
    the `session_*` fields describe the driver's open supply, if any."""

    TOPIC = CENTRAL_EVENTS
    KEY_FIELD = "driver_id"
    event_type: Literal["DRIVER_STATUS"] = "DRIVER_STATUS"
    request_id: UUID
    driver_id: Id
    known: bool
    balance_eur: Decimal | None = None
    session_id: UUID | None = None
    cp_id: Id | None = None
    session_status: Literal["authorised", "supplying"] | None = None
    price_eur_per_kwh: Price | None = None
    energy_kwh: Energy | None = None
    amount_eur: Euros | None = None


class AuthorizationResponse(Event):
    TOPIC = CENTRAL_EVENTS
    KEY_FIELD = "driver_id"
    event_type: Literal["AUTHORIZATION_RESPONSE"] = "AUTHORIZATION_RESPONSE"
    request_id: UUID
    driver_id: Id
    cp_id: Id
    authorised: bool
    reason: Text | None = None
    session_id: UUID | None = None
    price_eur_per_kwh: Price | None = None


class ChargingStarted(Event):
    """The vehicle is plugged in and energy flows."""

    TOPIC = CENTRAL_EVENTS
    KEY_FIELD = "driver_id"
    event_type: Literal["CHARGING_STARTED"] = "CHARGING_STARTED"
    driver_id: Id
    cp_id: Id
    session_id: UUID


class ChargingProgress(Event):
    """Central relays each telemetry reading to the driver being served."""

    TOPIC = CENTRAL_EVENTS
    KEY_FIELD = "driver_id"
    event_type: Literal["CHARGING_PROGRESS"] = "CHARGING_PROGRESS"
    driver_id: Id
    cp_id: Id
    session_id: UUID
    kw: Power
    energy_kwh: Energy
    amount_eur: Euros


class ChargingTicket(Event):
    TOPIC = CENTRAL_EVENTS
    KEY_FIELD = "driver_id"
    event_type: Literal["CHARGING_TICKET"] = "CHARGING_TICKET"
    driver_id: Id
    cp_id: Id
    session_id: UUID
    energy_kwh: Energy
    price_eur_per_kwh: Price
    amount_eur: Euros
    end_reason: EndReason
    started_at: datetime
    ended_at: datetime
    balance_eur: Decimal


class CpErrorSimulated(Event):
    """A CP faulted (seed flow 2); sent to each driver it concerns, else keyed by the CP."""

    TOPIC = CENTRAL_EVENTS
    KEY_FIELD = "driver_id"
    event_type: Literal["CP_ERROR_SIMULATED"] = "CP_ERROR_SIMULATED"
    cp_id: Id
    driver_id: Id | None = None
    error_type: ErrorType = "fault"
    new_status: CPState = CPState.AVERIADO
    message: Text

    def key(self) -> str:
        return self.driver_id or self.cp_id


class CpErrorFixed(Event):
    TOPIC = CENTRAL_EVENTS
    KEY_FIELD = "driver_id"
    event_type: Literal["CP_ERROR_FIXED"] = "CP_ERROR_FIXED"
    cp_id: Id
    driver_id: Id | None = None
    new_status: CPState = CPState.ACTIVADO
    message: Text

    def key(self) -> str:
        return self.driver_id or self.cp_id


class DriverNotice(Event):
    """Anything else Central tells one driver (e.g. a refused stop)."""

    TOPIC = CENTRAL_EVENTS
    KEY_FIELD = "driver_id"
    event_type: Literal["DRIVER_NOTICE"] = "DRIVER_NOTICE"
    driver_id: Id
    cp_id: Id | None = None
    level: Literal["info", "warning", "error"] = "info"
    message: Text


# --- cp-status: the public board, compacted, keyed by CP id --------------------------------


class CpStatus(Event):
    """Latest public state of a CP: lets drivers list available CPs without reading anyone's traffic.
    `stop_reason`: why a Parado CP is out of service ("weather alert", "stopped by Central",
    several joined by "; "); None otherwise, and absent from a Central before issue 15."""

    TOPIC = CP_STATUS
    KEY_FIELD = "cp_id"
    event_type: Literal["CP_STATUS"] = "CP_STATUS"
    cp_id: Id
    location: Location
    price_eur_per_kwh: Price
    state: CPState
    available: bool
    stop_reason: Text | None = None


# --- cp-commands: Central -> Engine, keyed by CP id ----------------------------------------


class SupplyAuthorised(Event):
    """Central's go-ahead: the Engine may supply this driver once the vehicle is plugged in."""

    TOPIC = CP_COMMANDS
    KEY_FIELD = "cp_id"
    event_type: Literal["SUPPLY_AUTHORISED"] = "SUPPLY_AUTHORISED"
    cp_id: Id
    session_id: UUID
    driver_id: Id
    price_eur_per_kwh: Price


class RequestDenied(Event):
    """A supply asked for at the CP's own menu was denied: the CP's screen says why (the driver,
    who may have no app, is told on central-events as usual)."""

    TOPIC = CP_COMMANDS
    KEY_FIELD = "cp_id"
    event_type: Literal["REQUEST_DENIED"] = "REQUEST_DENIED"
    cp_id: Id
    request_id: UUID
    driver_id: Id
    reason: Text


class StopSupply(Event):
    TOPIC = CP_COMMANDS
    KEY_FIELD = "cp_id"
    event_type: Literal["STOP_SUPPLY"] = "STOP_SUPPLY"
    cp_id: Id
    session_id: UUID
    reason: SupplyEndReason


class CpStop(Event):
    """Central blocks the CP (Parado, "Out of Order"); `reason` says why (absent from a Central
    before issue 15: stopped by Central)."""

    TOPIC = CP_COMMANDS
    KEY_FIELD = "cp_id"
    event_type: Literal["CP_STOP"] = "CP_STOP"
    cp_id: Id
    reason: StopReason = StopReason.STOPPED_BY_CENTRAL


class CpResume(Event):
    TOPIC = CP_COMMANDS
    KEY_FIELD = "cp_id"
    event_type: Literal["CP_RESUME"] = "CP_RESUME"
    cp_id: Id


class CpReportStatus(Event):
    """The admin asks a CP to report its state now (an OCPP charger: TriggerMessage
    StatusNotification; our own Engine: its status line, and its Monitor's next heartbeat)."""

    TOPIC = CP_COMMANDS
    KEY_FIELD = "cp_id"
    event_type: Literal["CP_REPORT_STATUS"] = "CP_REPORT_STATUS"
    cp_id: Id


class CpReset(Event):
    """The admin asks a CP to restart (an OCPP charger: Reset, Soft or `hard`); a running supply
    ends the way the charger reports it."""

    TOPIC = CP_COMMANDS
    KEY_FIELD = "cp_id"
    event_type: Literal["CP_RESET"] = "CP_RESET"
    cp_id: Id
    hard: bool = False


# --- cp-events: Engine -> Central, keyed by CP id ------------------------------------------


class SupplyStarted(Event):
    TOPIC = CP_EVENTS
    KEY_FIELD = "cp_id"
    event_type: Literal["SUPPLY_STARTED"] = "SUPPLY_STARTED"
    cp_id: Id
    session_id: UUID
    driver_id: Id


class CpTelemetry(Event):
    """One reading a second while supplying; energy is cumulative for the session."""

    TOPIC = CP_EVENTS
    KEY_FIELD = "cp_id"
    event_type: Literal["CP_TELEMETRY"] = "CP_TELEMETRY"
    cp_id: Id
    session_id: UUID
    driver_id: Id
    seq: Annotated[int, Field(ge=0)]
    kw: Power
    energy_kwh: Energy
    amount_eur: Euros


class SupplyEnded(Event):
    """The Engine's final reading of a supply (unplug, stop, or replayed after an Engine restart)."""

    TOPIC = CP_EVENTS
    KEY_FIELD = "cp_id"
    event_type: Literal["SUPPLY_ENDED"] = "SUPPLY_ENDED"
    cp_id: Id
    session_id: UUID
    driver_id: Id
    energy_kwh: Energy
    reason: SupplyEndReason


EVENT_TYPES: tuple[type[Event], ...] = (
    AuthorizationRequest,
    ChargingStopped,
    DriverStatusRequest,
    AuthorizationResponse,
    DriverStatus,
    ChargingStarted,
    ChargingProgress,
    ChargingTicket,
    CpErrorSimulated,
    CpErrorFixed,
    DriverNotice,
    CpStatus,
    SupplyAuthorised,
    RequestDenied,
    StopSupply,
    CpStop,
    CpResume,
    CpReportStatus,
    CpReset,
    SupplyStarted,
    CpTelemetry,
    SupplyEnded,
)

BY_TYPE: dict[str, type[Event]] = {
    cls.model_fields["event_type"].default: cls for cls in EVENT_TYPES
}


class BadEvent(ValueError):
    """A message that is not one of our events; `reason` says why, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_ANY_EVENT: TypeAdapter[Event] = TypeAdapter(
    Annotated[Union[EVENT_TYPES], Field(discriminator="event_type")]  # type: ignore[valid-type,arg-type]  # noqa: UP007
)


def parse_event(raw: bytes | str | None) -> Event:
    """Bytes from Kafka -> the event model, or BadEvent with a reason a human can act on.

    A good message is parsed and validated in one step by pydantic-core (half the time of
    `json.loads` and then the model); a bad one takes the slow path below, which says why."""
    if raw is None:
        raise BadEvent("empty message")
    try:
        return _ANY_EVENT.validate_json(raw)
    except ValidationError:
        return _parse_and_explain(raw)


def _parse_and_explain(raw: bytes | str) -> Event:
    """Step by step, so a bad message is rejected with the first thing wrong with it."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEvent(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadEvent("not a JSON object")
    event_type = data.get("event_type")
    if event_type not in BY_TYPE:
        raise BadEvent(f"unknown event_type {event_type!r}")
    try:
        event: Event = BY_TYPE[event_type].model_validate(data)
    except ValidationError as exc:
        raise BadEvent(f"invalid {event_type}: {_summarise(exc)}") from None
    return event


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "?"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
