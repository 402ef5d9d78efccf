"""The ports the services use, in one place; adapters implement them.

Each port is declared once, with the small values that cross it: Central's `Repository` (SQLite
today, PostgreSQL later), every program's `Publisher` (Kafka), the Engine's `SupplyStore` (a JSON
file) and `EngineControls` (what the Monitor link drives), and the Driver's `DriverFeeds` (its
Kafka readers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from evcharging.contracts.end_reasons import SupplyEndReason
from evcharging.contracts.events import Event
from evcharging.domain.records import CPRecord, DriverRecord
from evcharging.domain.session import Session
from evcharging.services.audit import AuditEntry, AuditQuery
from evcharging.services.cp_auth import Verifier

# --- Central's storage ------------------------------------------------------------------------


class RegistryChangeKind(StrEnum):
    REGISTERED = "registered"
    DEREGISTERED = "deregistered"
    ROTATED = "rotated"


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """One row of the Registry's change feed: Central, sharing the database, reads what is new."""

    seq: int
    cp_id: str
    kind: RegistryChangeKind


@dataclass(frozen=True, slots=True)
class StoredCpKey:
    """A CP key as the database keeps it: sealed under Central's master key."""

    cp_id: str
    version: int
    sealed: str


class Repository(Protocol):
    # charging points
    def add_cp(self, cp_id: str, location: str, price: Decimal) -> CPRecord | None: ...
    def upsert_cp(self, cp_id: str, location: str, price: Decimal) -> CPRecord: ...
    def update_cp(
        self, cp_id: str, location: str | None = None, price: Decimal | None = None
    ) -> CPRecord | None: ...
    def get_cp(self, cp_id: str) -> CPRecord | None: ...
    def list_cps(self) -> list[CPRecord]: ...
    def set_cp_stopped(self, cp_id: str, stopped: bool) -> None: ...
    def set_cp_error_simulated(self, cp_id: str, on: bool) -> None: ...

    # drivers
    def upsert_driver(self, driver_id: str, name: str, balance: Decimal) -> None: ...
    def get_driver(self, driver_id: str) -> DriverRecord | None: ...
    def list_drivers(self) -> list[DriverRecord]: ...

    # sessions
    def create_session(self, session: Session, request_id: str | None) -> bool: ...
    def session_by_request(self, request_id: str) -> Session | None: ...
    def get_session(self, session_id: str) -> Session | None: ...
    def open_sessions(self) -> list[Session]: ...
    def mark_supplying(self, session_id: str) -> None: ...
    def record_energies(self, readings: Sequence[tuple[str, Decimal, Decimal]]) -> None: ...
    def close_session(self, ended: Session) -> Decimal | None: ...
    def amend_energy(
        self, session_id: str, energy_kwh: Decimal, amount: Decimal
    ) -> Decimal | None: ...
    def unsent_tickets(self) -> list[Session]: ...
    def mark_ticket_sent(self, session_id: str) -> None: ...
    def find_sessions(
        self,
        driver_id: str | None = None,
        cp_id: str | None = None,
        status: str | None = None,
        limit: int = 200,
        offset: int = 0,
    ) -> Sequence[Session]: ...

    # credentials (the Registry writes them, Central reads them; only verifiers, never secrets)
    def enrol_cp(self, cp_id: str, location: str, price: Decimal, verifier: Verifier) -> bool:
        """Alta: the CP row added (or its location and price set) and its verifier stored, in one
        transaction; False, and nothing changed, when the CP already has credentials."""
        ...

    def rotate_credentials(self, cp_id: str, verifier: Verifier) -> bool:
        """A registered CP's verifier replaced; False when it has none."""
        ...

    def deregister_cp(self, cp_id: str) -> bool:
        """Baja: the CP's verifier deleted (the CP row and its sessions stay, for the history);
        False when it had none."""
        ...

    def get_verifier(self, cp_id: str) -> Verifier | None: ...
    def registered_cps(self) -> set[str]: ...
    def registry_changes(self, after: int) -> list[RegistryChange]:
        """The change feed's rows with seq > `after`, oldest first."""
        ...

    def last_registry_change(self) -> int: ...

    # per-CP symmetric keys (Central only; each row sealed under the master key: never in clear)
    def next_key_version(self, cp_id: str) -> int:
        """The CP's key version counter, incremented and returned (1 for its first key); it
        never goes back, even when every key is deleted, so an old version is never reused."""
        ...

    def key_versions(self) -> dict[str, int]:
        """The latest version issued per CP (CPs never given a key are absent)."""
        ...

    def save_cp_key(self, cp_id: str, version: int, sealed: str) -> None: ...
    def stored_cp_keys(self) -> list[StoredCpKey]: ...
    def delete_cp_keys(self, cp_id: str, versions: Sequence[int] | None = None) -> None:
        """Deletes the given versions of the CP's keys, or all of them (None)."""
        ...

    def set_keys_revoked(self, cp_id: str, revoked: bool) -> None:
        """The CP's "keys revoked" mark (CPRecord.keys_revoked): kept across restarts."""
        ...

    def set_weather_alert(
        self, cp_id: str, city: str | None, temperature_c: float | None = None
    ) -> None:
        """EV_W's alert for the CP (its city and reading), or none (`city` None): kept across
        restarts, so a CP keeps its last decision while EV_W is away."""
        ...

    # the audit log (append-only: there is no way to change or delete a row)
    def append_audit(self, entry: AuditEntry) -> None: ...
    def find_audit(self, query: AuditQuery) -> Sequence[AuditEntry]: ...


# --- events out -------------------------------------------------------------------------------


class Delivery(StrEnum):
    """What `Publisher.publish` guarantees when it returns: says which of its two modes ran."""

    ACKED = "acked"
    """The broker has the event (every in-sync replica); `on_delivered` has run."""

    QUEUED_UNTIL_BATCH_COMMIT = "queued until batch commit"
    """Handed to the producer, not yet acked: the caller is handling a consumed batch opened with
    `acks_before_commit()`, and that batch's offsets are committed only after this event is acked
    (re-sent until it is); `on_delivered` runs then.  A crash before that redelivers the batch,
    so the event is sent again by the (idempotent) handler: never lost, possibly twice."""

    NOT_SENT_NO_KEY = "not sent: no key"
    """Central's command to a CP that holds no key (never authenticated, or its keys revoked):
    no Engine could open it, and sent later under a future key it would act on a stale order
    (a CP stopped again after it came back). Said in the log; `on_delivered` does not run."""


class Publisher(Protocol):
    async def publish(
        self, event: Event, *, on_delivered: Callable[[], None] | None = None
    ) -> Delivery:
        """Never drops the event; the answer says what is true on return.

        `Delivery.ACKED` everywhere, except in the task that handles a consumed batch inside
        `acks_before_commit()`, where it is `Delivery.QUEUED_UNTIL_BATCH_COMMIT` (a burst costs
        one broker round trip, not one per event).  `on_delivered` runs after the ack."""
        ...

    async def publish_soon(self, event: Event) -> None:
        """Returns once the event is queued: for high-rate events a later one supersedes."""


# --- the Engine -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SupplyRecord:
    """What survives an Engine crash: the running figures of one supply."""

    session_id: str
    driver_id: str
    price_eur_per_kwh: Decimal
    energy_kwh: Decimal = Decimal("0.000")
    seq: int = 0
    ended_reason: SupplyEndReason | None = None  # set once ended, until SupplyEnded is delivered


class SupplyStore(Protocol):
    """Where supply records of one CP live between runs (a JSON file in the program)."""

    def load(self, cp_id: str) -> list[SupplyRecord]: ...
    def save(self, cp_id: str, records: Sequence[SupplyRecord]) -> None: ...


@dataclass(frozen=True, slots=True)
class Health:
    ko_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.ko_reason is None


@dataclass(frozen=True, slots=True)
class Accepted:
    pass


@dataclass(frozen=True, slots=True)
class EngineRefusal:
    """An Engine action refused (wrong phase, bad id, already another CP), with its reason."""

    reason: str


EngineOutcome = Accepted | EngineRefusal


class EngineControls(Protocol):
    """What the Monitor link drives in the Engine service."""

    def health_check(self) -> Health: ...
    def set_cp_id(self, cp_id: str) -> EngineOutcome: ...
    def set_central(self, up: bool) -> None: ...
    def monitor_disconnected(self) -> None: ...

    def key_exchange(self, monitor_public: str) -> str | EngineRefusal:
        """KEYX: a fresh exchange for the next KEY; the Engine's public key (b64)."""
        ...

    def install_key(self, cp_id: str, version: int, wrapped: str) -> EngineOutcome:
        """KEY: the CP's key, wrapped for the last KEYX's exchange (used once)."""
        ...

    def drop_keys(self, cp_id: str) -> EngineOutcome:
        """KEY_DROP: Central revoked the CP's keys."""
        ...


# --- EV_OCPP, the OCPP 1.6J gateway ------------------------------------------------------------


class LoginState(StrEnum):
    ACCEPTED = "accepted"  # Central authenticated the CP (and granted its key)
    DENIED = "denied"  # Central refused it: not registered, wrong credential, throttled
    UNREACHABLE = "unreachable"  # no answer from Central in time


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    state: LoginState
    reason: str = ""


class CentralLogins(Protocol):
    """The gateway's Monitor side: one authenticated link to Central per charger it holds, with a
    heartbeat every second carrying the charger's health (the socket protocol, SCRAM and all)."""

    async def login(self, cp_id: str, secret: str) -> LoginOutcome:
        """Authenticate the CP at Central with its Registry secret and keep its link up; an
        already authenticated CP is ACCEPTED at once."""
        ...

    def health(self, cp_id: str, ok: bool, reason: str = "") -> None:
        """What the CP's heartbeats say from now on (KO: Averiado at Central)."""
        ...

    async def logout(self, cp_id: str) -> None:
        """Close the CP's link (Central: Desconectado at once). Idempotent."""
        ...


class ChargerControls(Protocol):
    """The gateway's calls to a connected charger (OCPP CALLs); each returns the charger's answer
    as OCPP words (e.g. "Accepted", "Rejected", "Scheduled"), or a sentence starting with
    "failed" when it did not answer in time, refused with a CALLERROR, or is not connected."""

    async def remote_start(self, cp_id: str, id_tag: str, connector_id: int) -> str: ...
    async def remote_stop(self, cp_id: str, transaction_id: int) -> str: ...
    async def change_availability(self, cp_id: str, operative: bool) -> str: ...
    async def trigger_status(self, cp_id: str) -> str: ...
    async def reset(self, cp_id: str, hard: bool) -> str: ...


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """One OCPP transaction the gateway numbered; what a restarted gateway needs to bill its
    StopTransaction: the session it supplies (None: Central refused it, it bills nothing), the
    driver, the meter at its start."""

    transaction_id: int
    cp_id: str
    connector_id: int
    id_tag: str
    meter_start_wh: int
    started_at: str  # the charger's timestamp, as it sent it (a replay sends the same)
    session_id: str | None = None
    price_eur_per_kwh: Decimal | None = None
    meter_stop_wh: int | None = None  # set by StopTransaction: the record is kept until its
    end_reason: SupplyEndReason | None = None  # SUPPLY_ENDED is delivered, then forgotten

    @property
    def ended(self) -> bool:
        return self.meter_stop_wh is not None


@dataclass(frozen=True, slots=True)
class GatewayState:
    next_transaction_id: int = 1
    transactions: tuple[TransactionRecord, ...] = ()
    inoperative: frozenset[str] = frozenset()  # CPs the gateway last told Inoperative


class GatewayStore(Protocol):
    """Where the gateway's transactions live between runs (files in the program). Each change is
    written alone (a start, a stop, an end delivered), so its cost does not grow with the
    transactions open."""

    def load(self) -> GatewayState: ...

    def put(self, tx: TransactionRecord) -> None:
        """A transaction started or stopped."""
        ...

    def drop(self, transaction_id: int) -> None:
        """A transaction whose end was delivered: nothing left to bill."""
        ...

    def gateway(self, next_transaction_id: int, inoperative: frozenset[str]) -> None:
        """The ids handed out so far, and the CPs the gateway last made Inoperative."""
        ...


# --- the Driver -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriverRefusal:
    """An expected refusal of a driver's command (busy, nothing to stop, bad id), with its reason."""

    reason: str


class DriverFeeds(Protocol):
    """Where a driver's events come from: following an id starts reading its messages."""

    def follow(self, driver_id: str) -> DriverRefusal | None: ...

    def is_ready(self, driver_id: str) -> bool: ...

    async def ready(self, driver_id: str) -> None: ...
