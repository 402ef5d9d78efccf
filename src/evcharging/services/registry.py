"""EV_Registry's rules: alta (register), baja (deregister), rotation and consulta of a CP.

The rules (docs/registry.md):
- A CP is *registered* iff it has credentials (a verifier in the database).  Registering a CP
  that has none (new, made by an admin, or deregistered earlier) stores a new verifier and the
  CP's location and price, and answers the secret once (REGISTERED, HTTP 201).
- A registered CP is registered again only by a caller who proves it is that CP (its current
  secret) or an admin (the admin token): the secret is rotated (ROTATED, 200).  Anyone else is
  refused (ALREADY_REGISTERED, 409): nothing changes, so a stranger cannot take a CP over.
- Deregistering deletes the credentials (the CP row and its sessions stay for the history) and
  needs the same proof.
- Reads carry no secrets: the CP's location, price and whether it is registered.

Why the secret appears only in `Issued`: it is made here, its verifier goes to the database,
and the secret itself goes back to the caller once, in the answer; it is never logged, audited
or stored (`Issued.__repr__` hides it).  Proving a secret costs an scrypt (`secret_matches`),
so guessers are slowed by `FailureThrottle` ("cp:<id>" and "ip:<addr>"); at most
`hashing_slots` scrypts run at once (each takes 32 MiB), whatever the number of callers.

Thread-safe on purpose: the web layer runs each call in a worker thread (an scrypt would stall
its event loop), so the database and the throttle are used under one lock, and the slow
hashing outside it.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.contracts.fields import ID_RULE, Location, Price, is_valid_id
from evcharging.domain.records import CPRecord
from evcharging.domain.throttle import FailureThrottle
from evcharging.services.audit import UNKNOWN_IP, Audit, AuditQuery
from evcharging.services.cp_auth import make_verifier, new_secret, secret_matches
from evcharging.services.ports import Repository

log = logging.getLogger(__name__)

ADMIN = "admin"


# --- what callers send ---------------------------------------------------------------------------


class RegistrationBody(BaseModel):
    """What a CP tells the Registry about itself (the PUT body); any other field is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    location: Location
    price_eur_per_kwh: Price


@dataclass(frozen=True, slots=True)
class CPSecret:
    """The caller says it is the CP, and proves it with the CP's secret."""

    secret: str

    def __repr__(self) -> str:
        return "CPSecret(<hidden>)"


@dataclass(frozen=True, slots=True)
class AdminToken:
    """The caller says it is an admin, and proves it with the admin token."""

    token: str

    def __repr__(self) -> str:
        return "AdminToken(<hidden>)"


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Credentials the transport could not read (an unknown scheme): refused, never guessed at."""

    why: str


@dataclass(frozen=True, slots=True)
class LocalOperator:
    """An operator at the database itself (`evcharging cp enrol`): already trusted as admin."""


Proof = CPSecret | AdminToken | Unreadable | LocalOperator


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks (what they prove, if anything) and from which IP (the TCP peer)."""

    ip: str
    proof: Proof | None = None

    @classmethod
    def operator(cls) -> Caller:
        return cls(UNKNOWN_IP, LocalOperator())

    def actor(self, cp_id: str) -> str:
        """Who the audit row names: the admin when the caller claims to be one, else the CP."""
        return ADMIN if isinstance(self.proof, AdminToken | LocalOperator) else f"cp:{cp_id}"


# --- what the Registry answers -------------------------------------------------------------------


class Refusal(StrEnum):
    INVALID = "invalid"  # 422
    NOT_FOUND = "not found"  # 404
    ALREADY_REGISTERED = "already registered"  # 409
    PROOF_REQUIRED = "proof required"  # 401
    WRONG_PROOF = "wrong proof"  # 401
    THROTTLED = "throttled"  # 429


class RegistryRefusal(Exception):
    """A request refused, with a reason a person can read (already audited and logged)."""

    def __init__(self, kind: Refusal, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.retry_after = retry_after

    @property
    def retry_after_seconds(self) -> int | None:
        """Whole seconds for a Retry-After header (rounded up: never too early)."""
        return None if self.retry_after is None else max(1, math.ceil(self.retry_after))


@dataclass(frozen=True, slots=True)
class RegistryView:
    """A CP as the Registry shows it to anyone: no secret, no verifier."""

    cp_id: str
    location: str
    price_eur_per_kwh: Decimal
    registered: bool
    registered_at: datetime | None

    @property
    def json(self) -> dict[str, Any]:
        return {
            "cp_id": self.cp_id,
            "location": self.location,
            "price_eur_per_kwh": str(self.price_eur_per_kwh),
            "registered": self.registered,
            "registered_at": None if self.registered_at is None else self.registered_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Issued:
    """Credentials just issued: the secret, said once to the caller and nowhere else."""

    cp: RegistryView
    secret: str
    rotated: bool

    def __repr__(self) -> str:
        return f"Issued(cp_id={self.cp.cp_id!r}, rotated={self.rotated}, secret=<hidden>)"

    @property
    def json(self) -> dict[str, Any]:
        view = self.cp.json
        return {
            "cp_id": view["cp_id"],
            "secret": self.secret,
            "location": view["location"],
            "price_eur_per_kwh": view["price_eur_per_kwh"],
            "registered_at": view["registered_at"],
        }


# --- the service ---------------------------------------------------------------------------------


class RegistryService:
    """Alta, baja, rotation and consulta of CPs; every change and refusal audited."""

    def __init__(
        self,
        repo: Repository,
        audit: Audit,
        throttle: FailureThrottle,
        clock: Callable[[], float] = time.monotonic,
        *,
        admin_token: str | None = None,
        hashing_slots: int = 2,
    ) -> None:
        self._repo = repo
        self._audit = audit
        self._throttle = throttle
        self._clock = clock
        self._admin_token = admin_token.encode() if admin_token else None
        self._lock = threading.RLock()  # the database connection and the throttle
        self._hashing = threading.BoundedSemaphore(hashing_slots)

    # --- consulta ------------------------------------------------------------------------

    def get(self, cp_id: str) -> RegistryView | None:
        with self._lock:
            record = self._repo.get_cp(cp_id)
            if record is None:
                return None
            return self._view(record, self._repo.get_verifier(cp_id) is not None)

    def cps(self) -> list[RegistryView]:
        with self._lock:
            registered = self._repo.registered_cps()
            return [self._view(r, r.cp_id in registered) for r in self._repo.list_cps()]

    # --- alta and rotation ---------------------------------------------------------------

    def register(self, cp_id: str, location: str, price: Decimal | str, caller: Caller) -> Issued:
        """A new CP's credentials (rotated=False), or a registered CP's rotated for a caller who
        proves it is that CP or an admin; RegistryRefusal otherwise."""
        self._check_id(cp_id, caller, "register")
        fields = self._check_body(caller, cp_id, location=location, price_eur_per_kwh=price)
        with self._lock:
            registered = self._repo.get_verifier(cp_id) is not None
        if registered or isinstance(caller.proof, AdminToken | Unreadable):
            self._prove(cp_id, caller, "register", must=registered)
        secret = new_secret()
        with self._hashing:
            verifier = make_verifier(secret)
        location, price = fields.location, fields.price_eur_per_kwh
        with self._lock:
            if not registered and self._repo.enrol_cp(cp_id, location, price, verifier):
                action, rotated = AuditAction.CP_REGISTERED, False
            elif registered and self._repo.rotate_credentials(cp_id, verifier):
                self._repo.update_cp(cp_id, location, price)
                action, rotated = AuditAction.CREDENTIALS_ROTATED, True
            else:  # another request registered or deregistered it meanwhile
                raise self._refuse(
                    Refusal.ALREADY_REGISTERED,
                    cp_id,
                    caller,
                    "its registration changed meanwhile; look it up and try again",
                    op="register",
                )
            entry = self._audit.record(
                action,
                actor=caller.actor(cp_id),
                ip=caller.ip,
                cp_id=cp_id,
                detail="credentials rotated" if rotated else "registered",
                location=location,
                price_eur_per_kwh=price,
            )
            self._throttle.succeeded(f"cp:{cp_id}")
            record = self._repo.get_cp(cp_id)
            assert record is not None
            since = self._registered_at(cp_id) or entry.at
        log.info(
            "%s %s from %s (%s, %s €/kWh)",
            "rotated the credentials of" if rotated else "registered",
            cp_id,
            caller.ip,
            location,
            price,
        )
        return Issued(self._view(record, True, since), secret, rotated)

    # --- baja ----------------------------------------------------------------------------

    def deregister(self, cp_id: str, caller: Caller) -> None:
        """The CP's credentials deleted (its row and history stay); RegistryRefusal otherwise."""
        self._check_id(cp_id, caller, "deregister")
        with self._lock:
            registered = self._repo.get_verifier(cp_id) is not None
        if not registered:
            raise self._refuse(Refusal.NOT_FOUND, cp_id, caller, "not registered", op="deregister")
        self._prove(cp_id, caller, "deregister", must=True)
        with self._lock:
            if not self._repo.deregister_cp(cp_id):
                raise self._refuse(
                    Refusal.NOT_FOUND, cp_id, caller, "not registered", op="deregister"
                )
            self._audit.record(
                AuditAction.CP_DEREGISTERED,
                actor=caller.actor(cp_id),
                ip=caller.ip,
                cp_id=cp_id,
                detail="deregistered",
            )
            self._throttle.succeeded(f"cp:{cp_id}")
        log.info("deregistered %s from %s", cp_id, caller.ip)

    # --- refusals a transport finds before the service --------------------------------

    def refuse_input(self, cp_id: str | None, caller: Caller, reason: str, op: str) -> None:
        """A request the transport could not read (HTTP 422): audited and logged like the rest."""
        self._refuse(Refusal.INVALID, cp_id, caller, reason, op=op)

    # --- inside ----------------------------------------------------------------------------

    def _check_id(self, cp_id: str, caller: Caller, op: str) -> None:
        if not is_valid_id(cp_id):
            raise self._refuse(
                Refusal.INVALID, None, caller, f"cp_id: not an id ({ID_RULE})", op=op
            )

    def _check_body(self, caller: Caller, cp_id: str, **body: object) -> RegistrationBody:
        try:
            return RegistrationBody.model_validate(body)
        except ValidationError as exc:
            raise self._refuse(
                Refusal.INVALID, cp_id, caller, invalid_fields(exc), op="register"
            ) from None

    def _prove(self, cp_id: str, caller: Caller, op: str, *, must: bool) -> None:
        """Returns if the caller proved it is the CP or an admin; RegistryRefusal otherwise."""
        proof = caller.proof
        if isinstance(proof, LocalOperator):
            return
        if proof is None:
            if must:
                reason = (
                    "already registered: prove it is this CP (Authorization: CP <secret>) or "
                    "an admin (Bearer <admin token>) to rotate its credentials"
                    if op == "register"
                    else "prove it is this CP (Authorization: CP <secret>) or an admin "
                    "(Bearer <admin token>)"
                )
                kind = Refusal.ALREADY_REGISTERED if op == "register" else Refusal.PROOF_REQUIRED
                raise self._refuse(kind, cp_id, caller, reason, op=op)
            return
        if isinstance(proof, Unreadable):
            raise self._refuse(Refusal.WRONG_PROOF, cp_id, caller, proof.why, op=op)
        keys = (f"cp:{cp_id}", f"ip:{caller.ip}")
        with self._lock:
            wait = self._throttle.wait(keys, self._clock())
            if wait > 0:
                reason = f"too many failed attempts; try again in {math.ceil(wait)} s"
                raise self._refuse(
                    Refusal.THROTTLED,
                    cp_id,
                    caller,
                    reason,
                    op=op,
                    action=AuditAction.AUTH_THROTTLED,
                    retry_after=wait,
                )
            verifier = self._repo.get_verifier(cp_id) if isinstance(proof, CPSecret) else None
        if isinstance(proof, AdminToken):
            ok = self._admin_token is not None and hmac.compare_digest(
                proof.token.encode(), self._admin_token
            )
            what = "admin token"
        else:
            with self._hashing:
                ok = verifier is not None and secret_matches(verifier, proof.secret)
            what = "CP secret"
        if ok:
            return
        with self._lock:
            self._throttle.failed(keys, self._clock())
        raise self._refuse(
            Refusal.WRONG_PROOF,
            cp_id,
            caller,
            f"wrong {what}",
            op=op,
            action=AuditAction.AUTH_FAILED,
        )

    def _refuse(
        self,
        kind: Refusal,
        cp_id: str | None,
        caller: Caller,
        reason: str,
        *,
        op: str,
        action: AuditAction = AuditAction.REGISTRY_REFUSED,
        retry_after: float | None = None,
    ) -> RegistryRefusal:
        """One refusal: its audit row and its log line (never the proof), and the error to raise."""
        with self._lock:
            self._audit.record(
                action,
                actor=caller.actor(cp_id) if cp_id else "-",
                ip=caller.ip,
                outcome=Outcome.DENIED,
                cp_id=cp_id,
                detail=reason,
                op=op,
            )
        log.warning("%s of %s from %s refused: %s", op, cp_id or "?", caller.ip, reason)
        return RegistryRefusal(kind, reason, retry_after)

    def _view(
        self, record: CPRecord, registered: bool, since: datetime | None = None
    ) -> RegistryView:
        return RegistryView(
            cp_id=record.cp_id,
            location=record.location,
            price_eur_per_kwh=record.price_eur_per_kwh,
            registered=registered,
            registered_at=(since or self._registered_at(record.cp_id)) if registered else None,
        )

    def _registered_at(self, cp_id: str) -> datetime | None:
        """When the CP's current registration was made: its latest `registry.registered` row
        (the audit log is the record of it; a rotation keeps the registration's time)."""
        rows = self._repo.find_audit(
            AuditQuery(cp_id=cp_id, action=AuditAction.CP_REGISTERED, limit=1)
        )
        return rows[0].at.astimezone(UTC) if rows else None


def invalid_fields(exc: ValidationError) -> str:
    """The fields at fault and their rules, without echoing the input back."""
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors)
