"""Stand-ins for EV_OCPP's ports (`CentralLogins`, `ChargerControls`, `GatewayStore`) and an
audit sink that keeps rows in a list: the gateway's core and its WebSocket adapter are tested
without Central, Kafka or a disk."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from evcharging.contracts.audit import AuditAction
from evcharging.services.audit import AuditEntry
from evcharging.services.ports import GatewayState, LoginOutcome, LoginState, TransactionRecord


class FakeLogins:
    """Central's answer to a CP's login is `outcome` (programmable); health and logouts kept."""

    def __init__(self) -> None:
        self.outcome = LoginOutcome(LoginState.ACCEPTED)
        self.logins: list[tuple[str, str]] = []
        self.healths: list[tuple[str, bool, str]] = []
        self.logouts: list[str] = []
        self.during_login: Callable[[str], None] | None = None  # runs while Central answers

    async def login(self, cp_id: str, secret: str) -> LoginOutcome:
        self.logins.append((cp_id, secret))
        if self.during_login is not None:
            self.during_login(cp_id)
        return self.outcome

    def health(self, cp_id: str, ok: bool, reason: str = "") -> None:
        self.healths.append((cp_id, ok, reason))

    def last_health(self, cp_id: str) -> tuple[bool, str] | None:
        mine = [(ok, reason) for cp, ok, reason in self.healths if cp == cp_id]
        return mine[-1] if mine else None

    async def logout(self, cp_id: str) -> None:
        self.logouts.append(cp_id)


class FakeControls:
    """Records every CALL the gateway makes, in order; answers `answers[name]` ("Accepted" by
    default). A name in `held` waits for its event before answering (a slow charger)."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.answers: dict[str, str] = {}
        self.held: dict[str, asyncio.Event] = {}

    async def _answer(self, name: str, *args: object) -> str:
        self.calls.append((name, *args))
        gate = self.held.get(name)
        if gate is not None:
            await gate.wait()
        return self.answers.get(name, "Accepted")

    def names(self) -> list[object]:
        return [c[0] for c in self.calls]

    async def remote_start(self, cp_id: str, id_tag: str, connector_id: int) -> str:
        return await self._answer("remote_start", cp_id, id_tag, connector_id)

    async def remote_stop(self, cp_id: str, transaction_id: int) -> str:
        return await self._answer("remote_stop", cp_id, transaction_id)

    async def change_availability(self, cp_id: str, operative: bool) -> str:
        return await self._answer("change_availability", cp_id, operative)

    async def trigger_status(self, cp_id: str) -> str:
        return await self._answer("trigger_status", cp_id)

    async def reset(self, cp_id: str, hard: bool) -> str:
        return await self._answer("reset", cp_id, hard)


class MemoryStore:
    """A `GatewayStore` in memory: a new service on the same store is a restarted gateway."""

    def __init__(self, state: GatewayState | None = None) -> None:
        self.state = state or GatewayState(next_transaction_id=1000)
        self.saves = 0

    def load(self) -> GatewayState:
        return self.state

    def put(self, tx: TransactionRecord) -> None:
        others = tuple(t for t in self.state.transactions if t.transaction_id != tx.transaction_id)
        self.state = replace(self.state, transactions=(*others, tx))
        self.saves += 1

    def drop(self, transaction_id: int) -> None:
        kept = tuple(t for t in self.state.transactions if t.transaction_id != transaction_id)
        self.state = replace(self.state, transactions=kept)
        self.saves += 1

    def gateway(self, next_transaction_id: int, inoperative: frozenset[str]) -> None:
        self.state = replace(
            self.state, next_transaction_id=next_transaction_id, inoperative=inoperative
        )
        self.saves += 1


class AuditRows:
    """An audit sink that keeps its rows."""

    def __init__(self) -> None:
        self.rows: list[AuditEntry] = []

    def append_audit(self, entry: AuditEntry) -> None:
        self.rows.append(entry)

    def of(self, action: AuditAction) -> list[AuditEntry]:
        return [r for r in self.rows if r.action is action]
