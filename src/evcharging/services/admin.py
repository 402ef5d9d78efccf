"""Central's one admin front door: who may act, what they may ask, what they are answered.

Both transports (the HTTP API and the dashboards' WebSocket), and Central's own terminal, only
parse their own framing and map the outcome back to it; everything else is here, once:

- one token check, in constant time (`services/roles.py`), for every admin request: no token or
  an unknown one is refused as unauthorised (401), a known token of another role (EV_W's) as
  forbidden (403);
- one set of command models, with the field rules of the contracts;
- one table: command -> `CentralService` coroutine -> one reply text and view;
- one `Caller` (who, over which transport, from where), and one seam, `AdminDesk._record`, that
  every admin outcome passes through: logged, and written to the audit log (`admin.action` or
  `admin.refused`, with the caller's IP; never the token, never the raw request).

An admin request that is not carried out raises `AdminRefusal` with its kind (the transports map
it: HTTP 401/403/404/409/422, WebSocket an `error` frame) and a reason a person can read.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.contracts.fields import ErrorType, Id, Location, Price
from evcharging.domain.admin_rules import AdminAction, Conflict, UnknownCP
from evcharging.services.audit import UNKNOWN_IP, Audit
from evcharging.services.central import (
    CentralService,
    Who,
    error_fixed_text,
    error_simulated_text,
    reset_asked_text,
    status_asked_text,
)
from evcharging.services.central_views import BulkJson, BulkOutcome, CPJson, CPView
from evcharging.services.roles import WHO, Role, Roles

log = logging.getLogger(__name__)

ADMITTED = "admin token accepted"


# --- who asks ----------------------------------------------------------------------------------


class Transport(StrEnum):
    HTTP = "http"
    WEBSOCKET = "websocket"
    TERMINAL = "terminal"  # Central's own terminal (its panel's command line)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks for an admin action, over which transport, from where (host:port and, for a
    WebSocket, which socket; `ip` the address alone, for the audit log). `who` is "anonymous"
    until the admin token is accepted."""

    transport: Transport
    peer: str
    who: str = "anonymous"
    ip: str = UNKNOWN_IP

    @property
    def as_who(self) -> Who:
        return Who(self.who, self.ip)

    def __str__(self) -> str:
        return f"{self.who} via {self.transport} {self.peer}"


def at_terminal() -> Caller:
    """The operator at Central's own terminal: the admin without a token (whoever can type there
    started Central, and saw its token), with no address (the audit log's "-")."""
    return Caller(Transport.TERMINAL, "Central's panel", who="admin")


# --- what they may ask -------------------------------------------------------------------------


class Command(StrEnum):
    """Every admin action; the values are the WebSocket's action names."""

    STOP_CP = AdminAction.STOP.value
    RESUME_CP = AdminAction.RESUME.value
    SIMULATE_ERROR = AdminAction.SIMULATE_ERROR.value
    FIX_ERROR = AdminAction.FIX_ERROR.value
    REVOKE_KEYS = AdminAction.REVOKE_KEYS.value
    REPORT_STATUS = AdminAction.REPORT_STATUS.value
    RESET_CP = AdminAction.RESET.value
    STOP_ALL = "stop_all"
    RESUME_ALL = "resume_all"
    ROTATE_KEYS = "rotate_keys"
    REGISTER_CP = "register_cp"
    EDIT_CP = "edit_cp"


class _Fields(BaseModel):
    """Any field not named is refused (HTTP 422, WebSocket `invalid fields`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CPChanges(_Fields):
    """What to change of a registered CP: its location, its price, or both (the HTTP body)."""

    location: Location | None = None
    price_eur_per_kwh: Price | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> CPChanges:
        if self.location is None and self.price_eur_per_kwh is None:
            raise ValueError("give location and/or price_eur_per_kwh")
        return self


class ErrorDetails(_Fields):
    """What error to simulate (the HTTP body; optional)."""

    error_type: ErrorType = "fault"


class StopCP(_Fields):
    name: ClassVar[Command] = Command.STOP_CP
    cp_id: Id


class ResumeCP(_Fields):
    name: ClassVar[Command] = Command.RESUME_CP
    cp_id: Id


class FixError(_Fields):
    name: ClassVar[Command] = Command.FIX_ERROR
    cp_id: Id


class SimulateError(ErrorDetails):
    name: ClassVar[Command] = Command.SIMULATE_ERROR
    cp_id: Id


class RevokeKeys(_Fields):
    """ "Restaurar claves": the CP's keys deleted, out of service until it re-authenticates."""

    name: ClassVar[Command] = Command.REVOKE_KEYS
    cp_id: Id


class ReportStatus(_Fields):
    """The CP asked to report its state now (an OCPP charger: TriggerMessage)."""

    name: ClassVar[Command] = Command.REPORT_STATUS
    cp_id: Id


class ResetDetails(_Fields):
    """Which reset (the HTTP body; optional): soft unless `hard`."""

    hard: bool = False


class ResetCP(ResetDetails):
    """The CP asked to restart (an OCPP charger: Reset Soft, or Hard)."""

    name: ClassVar[Command] = Command.RESET_CP
    cp_id: Id


class RotateKeys(_Fields):
    """Every connected CP asked to authenticate again, for a new key."""

    name: ClassVar[Command] = Command.ROTATE_KEYS


class StopAll(_Fields):
    name: ClassVar[Command] = Command.STOP_ALL


class ResumeAll(_Fields):
    name: ClassVar[Command] = Command.RESUME_ALL


class RegisterCP(_Fields):
    """A new CP (also the HTTP body, where the id is called `id`)."""

    name: ClassVar[Command] = Command.REGISTER_CP
    cp_id: Id = Field(validation_alias=AliasChoices("id", "cp_id"))
    location: Location
    price_eur_per_kwh: Price


class EditCP(CPChanges):
    name: ClassVar[Command] = Command.EDIT_CP
    cp_id: Id


AdminCommand = (
    StopCP
    | ResumeCP
    | FixError
    | SimulateError
    | RevokeKeys
    | ReportStatus
    | ResetCP
    | StopAll
    | ResumeAll
    | RotateKeys
    | RegisterCP
    | EditCP
)


# --- what they are answered --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdminReply:
    """A command carried out: `done` names the outcome (the WebSocket's reply type), `message`
    says it to a person; `cp` is the CP's new view, `bulk` what a bulk action did, `asked` the
    CPs a key rotation asked for new keys."""

    command: AdminCommand
    done: str
    message: str
    cp: CPView | None = None
    bulk: BulkOutcome | None = None
    asked: tuple[str, ...] | None = None


class Refusal(StrEnum):
    UNAUTHORISED = "unauthorised"  # no admin token, or an unknown one
    FORBIDDEN = "forbidden"  # a token Central knows, of another role (EV_W's)
    INVALID = "invalid"  # a field missing or breaking its rule
    UNKNOWN_CP = "unknown_cp"
    CONFLICT = "conflict"  # makes no sense in the CP's state; nothing changed


class AdminRefusal(Exception):
    """An admin request not carried out (nothing changed), with its kind and its reason."""

    def __init__(self, kind: Refusal, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


# --- the table: command -> service call -> reply -----------------------------------------------


def _bulk(
    command: AdminCommand, done: str, verb: str, why: str, outcome: BulkOutcome
) -> AdminReply:
    n, skipped = len(outcome.changed), len(outcome.skipped)
    message = f"{'1 CP' if n == 1 else f'{n} CPs'} {verb}" + (
        f"; {skipped} skipped ({why})" if skipped else ""
    )
    return AdminReply(command, done, message, bulk=outcome)


async def _stop_cp(svc: CentralService, c: StopCP, who: Who) -> AdminReply:
    view = await svc.stop_cp(c.cp_id, who)
    return AdminReply(c, "cp_stopped", f"CP {c.cp_id} stopped: {view.caption}", view)


async def _resume_cp(svc: CentralService, c: ResumeCP, who: Who) -> AdminReply:
    view = await svc.resume_cp(c.cp_id, who)
    return AdminReply(c, "cp_resumed", f"CP {c.cp_id} resumed: {view.state.value}", view)


async def _simulate_error(svc: CentralService, c: SimulateError, who: Who) -> AdminReply:
    view = await svc.simulate_error(c.cp_id, c.error_type)
    return AdminReply(c, "error_simulated", error_simulated_text(c.cp_id, c.error_type), view)


async def _fix_error(svc: CentralService, c: FixError, who: Who) -> AdminReply:
    view = await svc.fix_error(c.cp_id)
    return AdminReply(c, "error_fixed", error_fixed_text(c.cp_id), view)


async def _stop_all(svc: CentralService, c: StopAll, who: Who) -> AdminReply:
    return _bulk(c, "all_stopped", "stopped", "already stopped", await svc.stop_all(who))


async def _resume_all(svc: CentralService, c: ResumeAll, who: Who) -> AdminReply:
    return _bulk(c, "all_resumed", "resumed", "not stopped", await svc.resume_all(who))


def _keys_held(svc: CentralService) -> None:
    if svc.keys is None:  # a Central built without keys (tests of other rules): nothing to do
        raise Conflict("this Central issues no per-CP keys: there are none to revoke or rotate")


async def _revoke_keys(svc: CentralService, c: RevokeKeys, who: Who) -> AdminReply:
    _keys_held(svc)
    view = await svc.revoke_keys(c.cp_id, who)
    text = f"CP {c.cp_id} keys revoked: out of service until its Monitor authenticates again"
    return AdminReply(c, "keys_revoked", text, view)


async def _report_status(svc: CentralService, c: ReportStatus, who: Who) -> AdminReply:
    view = await svc.report_status(c.cp_id, who)
    return AdminReply(c, "status_asked", status_asked_text(c.cp_id), view)


async def _reset_cp(svc: CentralService, c: ResetCP, who: Who) -> AdminReply:
    view = await svc.reset_cp(c.cp_id, c.hard, who)
    return AdminReply(c, "reset_asked", reset_asked_text(c.cp_id, c.hard), view)


async def _rotate_keys(svc: CentralService, c: RotateKeys, who: Who) -> AdminReply:
    _keys_held(svc)
    asked = tuple(svc.rotate_all_keys(who))
    n = len(asked)
    text = (
        f"{'1 connected CP' if n == 1 else f'{n} connected CPs'} asked to authenticate again "
        "for a new key"
        if n
        else "no connected CP to ask for a new key"
    )
    return AdminReply(c, "keys_rotated", text, asked=asked)


async def _register_cp(svc: CentralService, c: RegisterCP, who: Who) -> AdminReply:
    view = await svc.register_cp(c.cp_id, c.location, c.price_eur_per_kwh)
    text = f"CP {c.cp_id} registered ({c.location}, {c.price_eur_per_kwh} €/kWh)"
    return AdminReply(c, "cp_registered", text, view)


async def _edit_cp(svc: CentralService, c: EditCP, who: Who) -> AdminReply:
    view = await svc.edit_cp(c.cp_id, c.location, c.price_eur_per_kwh)
    text = f"CP {c.cp_id} edited ({view.location}, {view.price_eur_per_kwh} €/kWh)"
    return AdminReply(c, "cp_edited", text, view)


@dataclass(frozen=True)
class _Entry:
    model: type[AdminCommand]
    run: Callable[[CentralService, Any, Who], Awaitable[AdminReply]]  # who: for the audit log


TABLE: dict[Command, _Entry] = {
    Command.STOP_CP: _Entry(StopCP, _stop_cp),
    Command.RESUME_CP: _Entry(ResumeCP, _resume_cp),
    Command.SIMULATE_ERROR: _Entry(SimulateError, _simulate_error),
    Command.FIX_ERROR: _Entry(FixError, _fix_error),
    Command.REVOKE_KEYS: _Entry(RevokeKeys, _revoke_keys),
    Command.REPORT_STATUS: _Entry(ReportStatus, _report_status),
    Command.RESET_CP: _Entry(ResetCP, _reset_cp),
    Command.STOP_ALL: _Entry(StopAll, _stop_all),
    Command.RESUME_ALL: _Entry(ResumeAll, _resume_all),
    Command.ROTATE_KEYS: _Entry(RotateKeys, _rotate_keys),
    Command.REGISTER_CP: _Entry(RegisterCP, _register_cp),
    Command.EDIT_CP: _Entry(EditCP, _edit_cp),
}


def invalid_fields(exc: ValidationError) -> str:
    """The fields at fault and their rules, without echoing the input back."""
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors)


# --- the desk ----------------------------------------------------------------------------------


class AdminDesk:
    """Admit -> read the command -> run it -> reply; every outcome recorded in one place."""

    def __init__(
        self,
        service: CentralService,
        admin_token: str | None,
        audit: Audit | None = None,
        *,
        roles: Roles | None = None,
    ) -> None:
        """`admin_token` None: no remote caller is ever admitted (a desk for Central's terminal
        alone). `audit`: where admin outcomes are recorded (default: the service's audit log).
        `roles`: every token Central knows (default: the admin token alone), so that another
        role's token is refused as forbidden, not as unknown."""
        self.service = service
        self.audit = audit if audit is not None else service.audit
        self.roles = roles if roles is not None else Roles(admin_token)

    def admit(self, caller: Caller, token: object, action: str | None = None) -> Caller:
        """The caller as admin if `token` is Central's admin token; else AdminRefusal."""
        role = self.roles.role_of(token)
        if role is Role.ADMIN:
            return replace(caller, who="admin")
        if role is not None:
            reason = f"{WHO[role]} cannot do admin actions"
            self._record(caller, action, reason, refused=True)
            raise AdminRefusal(Refusal.FORBIDDEN, reason)
        given = isinstance(token, str) and bool(token)
        reason = "wrong admin token" if given else "admin token required"
        self._record(caller, action, reason, refused=True)
        raise AdminRefusal(Refusal.UNAUTHORISED, reason)

    def logged_in(self, caller: Caller) -> str:
        """A login (the dashboard's): the token was accepted, nothing else is done."""
        self._record(caller, "login", ADMITTED, refused=False)
        return ADMITTED

    def reject(self, caller: Caller, action: str | None, reason: str) -> AdminRefusal:
        """A request a transport could not even read as an admin request (malformed, unknown
        action): recorded like any refusal, and returned for the transport to answer."""
        return self._refuse(caller, action, Refusal.INVALID, reason)

    def command(self, caller: Caller, name: Command, fields: Mapping[str, Any]) -> AdminCommand:
        """`fields` read as the command `name` (checked after the token: a caller without it
        learns nothing about them)."""
        try:
            return TABLE[name].model.model_validate(fields)
        except ValidationError as exc:
            raise self._refuse(
                caller, name, Refusal.INVALID, f"invalid fields: {invalid_fields(exc)}"
            ) from None

    async def run(self, caller: Caller, command: AdminCommand) -> AdminReply:
        """Carries out a command for an admitted caller."""
        if caller.who != "admin":  # a transport that forgot `admit`: a bug, never an action
            raise self._refuse(caller, command.name, Refusal.UNAUTHORISED, "admin token required")
        try:
            reply = await TABLE[command.name].run(self.service, command, caller.as_who)
        except UnknownCP as exc:
            raise self._refuse(
                caller, command.name, Refusal.UNKNOWN_CP, exc.reason, _cp_of(command)
            ) from None
        except Conflict as exc:
            raise self._refuse(
                caller, command.name, Refusal.CONFLICT, exc.reason, _cp_of(command)
            ) from None
        self._record(caller, command.name, reply.message, refused=False, cp_id=_cp_of(command))
        return reply

    async def act(self, caller: Caller, name: Command, fields: Mapping[str, Any]) -> AdminReply:
        """`fields` read as `name` and carried out: an HTTP route's one call."""
        return await self.run(caller, self.command(caller, name, fields))

    async def on_cp(self, caller: Caller, name: Command, fields: Mapping[str, Any]) -> CPJson:
        """A per-CP command: the CP's view after it."""
        reply = await self.act(caller, name, fields)
        assert reply.cp is not None
        return reply.cp.json

    async def on_all(self, caller: Caller, name: Command) -> BulkJson:
        """A bulk command: which CPs it changed, and which it skipped and why."""
        reply = await self.act(caller, name, {})
        assert reply.bulk is not None
        return reply.bulk.json

    def invalid(self, caller: Caller, action: str | None, reason: str) -> None:
        """Input the transport's own validation refused (FastAPI's 422): recorded like any
        refusal; the transport answers it itself."""
        self._record(caller, action, reason, refused=True)

    def _refuse(
        self,
        caller: Caller,
        action: str | None,
        kind: Refusal,
        reason: str,
        cp_id: str | None = None,
    ) -> AdminRefusal:
        self._record(caller, action, reason, refused=True, cp_id=cp_id)
        return AdminRefusal(kind, reason)

    def _record(
        self,
        caller: Caller,
        action: str | None,
        outcome: str,
        *,
        refused: bool,
        cp_id: str | None = None,
    ) -> None:
        """Every admin outcome, done or refused, passes here: logged and audited, with who asked
        and from which IP. Never the token, never the raw request."""
        if refused:
            log.warning("%s: action %s refused: %s", caller, action or "-", outcome)
        else:
            log.info("%s: admin action %s done: %s", caller, action, outcome)
        self.audit.record(
            AuditAction.ADMIN_REFUSED if refused else AuditAction.ADMIN_ACTION,
            actor=caller.who,
            ip=caller.ip,
            outcome=Outcome.DENIED if refused else Outcome.OK,
            cp_id=cp_id,
            detail=outcome,
            command=action or "-",
            transport=caller.transport.value,
        )


def _cp_of(command: AdminCommand) -> str | None:
    return getattr(command, "cp_id", None)
