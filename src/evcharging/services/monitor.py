"""The CP Monitor's rules: what the Engine's health is, and what Central must be told about it.

Why a service: the two socket loops (Central link, Engine link; `adapters/sockets/monitor_links`)
only move frames; every decision (heartbeat status, when to send FAULT or RECOVER, when to tell
the Engine its CP id or Central's state) is here, pure and unit-tested.

Reporting rule: Central is told FAULT once when the Engine turns KO or stops answering, and again
on each new Central link while the fault lasts (Central resets a CP's health when it
authenticates); RECOVER once when the Engine answers OK after a FAULT was sent.  The heartbeat
carries the same health (OK/KO) every interval.

What the operator reads: one status line whenever the Engine's health or Central's link changes
(`status_line`), and, from the app, a periodic `summary_line` of heartbeats and health checks, so
a Monitor in steady state still shows it is alive without printing every second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from evcharging.contracts.socket_ops import EngineState, Opcode

log = logging.getLogger(__name__)


class EngineHealth(StrEnum):
    UNKNOWN = "unknown"  # not checked yet
    OK = EngineState.OK.value  # the Engine answers OK
    KO = EngineState.KO.value  # the Engine answers KO#reason
    UNREACHABLE = "unreachable"  # no answer: refused, timed out, link lost


class CentralLink(StrEnum):
    UNKNOWN = "unknown"  # not tried yet
    UP = "up"  # authenticated, heartbeats answered
    DOWN = "down"  # cannot connect, or the link failed
    DENIED = "denied"  # Central refused the CP
    NOT_REGISTERED = "not registered"  # no credentials: the Registry must issue them first


@dataclass(frozen=True, slots=True)
class Fault:
    reason: str


@dataclass(frozen=True, slots=True)
class Recover:
    pass


Report = Fault | Recover


@dataclass
class Backoff:
    """Capped exponential delays between reconnection attempts."""

    first: float
    maximum: float
    factor: float = 2.0

    def __post_init__(self) -> None:
        self._next = self.first

    def next(self) -> float:
        delay = self._next
        self._next = min(delay * self.factor, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.first


@dataclass(frozen=True, slots=True)
class Counts:
    """What the Monitor has done since it started (heartbeats to Central, checks of the Engine)."""

    hb_sent: int = 0
    hb_answered: int = 0
    checks_ok: int = 0
    checks_ko: int = 0
    checks_unanswered: int = 0

    def minus(self, earlier: Counts) -> Counts:
        return Counts(
            self.hb_sent - earlier.hb_sent,
            self.hb_answered - earlier.hb_answered,
            self.checks_ok - earlier.checks_ok,
            self.checks_ko - earlier.checks_ko,
            self.checks_unanswered - earlier.checks_unanswered,
        )

    @property
    def checks(self) -> int:
        return self.checks_ok + self.checks_ko + self.checks_unanswered


class MonitorService:
    """One CP's Monitor; `on_change` is called whenever a link loop may have something to send."""

    def __init__(self, cp_id: str, on_change: Callable[[], None] = lambda: None) -> None:
        self.cp_id = cp_id
        self._on_change = on_change
        self.health = EngineHealth.UNKNOWN
        self.health_reason = ""
        self.central = CentralLink.UNKNOWN
        self.central_reason = ""  # why Central refused the CP
        self.counts = Counts()
        self._summarised = Counts()  # the counts at the last summary
        self._fault_told: bool = False  # the last thing Central was told was a FAULT
        self._told_on_link: Report | None = None  # what this Central link has been told

    # --- the Engine link ---------------------------------------------------------------

    def engine_ok(self) -> None:
        """The Engine answered a HEALTH check with OK."""
        self.counts = replace(self.counts, checks_ok=self.counts.checks_ok + 1)
        self._set_health(EngineHealth.OK, "")

    def engine_ko(self, reason: str) -> None:
        """The Engine answered a HEALTH check with KO#reason."""
        self.counts = replace(self.counts, checks_ko=self.counts.checks_ko + 1)
        reason = reason or "Engine KO"
        new_reason = self.health is EngineHealth.KO and reason != self.health_reason
        self._set_health(EngineHealth.KO, reason)
        if new_reason:
            self._announce()

    def engine_unreachable(self, reason: str) -> None:
        """No answer from the Engine (refused, timed out, link lost); said once, not per retry."""
        self.counts = replace(self.counts, checks_unanswered=self.counts.checks_unanswered + 1)
        self._set_health(EngineHealth.UNREACHABLE, f"Engine not answering: {reason}")

    def _set_health(self, health: EngineHealth, reason: str) -> None:
        changed = health is not self.health
        self.health, self.health_reason = health, reason
        if changed:
            self._announce()
            self._on_change()

    @property
    def has_verdict(self) -> bool:
        return self.health is not EngineHealth.UNKNOWN

    @property
    def heartbeat_status(self) -> EngineState:
        """HB#cp#OK|KO: OK only when the Engine answered OK."""
        return EngineState.OK if self.health is EngineHealth.OK else EngineState.KO

    @property
    def cp_accepted(self) -> bool:
        """The Engine may be told its CP id once Central has accepted it (and while it does)."""
        return self.central is CentralLink.UP

    def central_to_tell_engine(self) -> bool | None:
        """CENTRAL#UP (True) / CENTRAL#DOWN (False), or None while nothing is known yet."""
        if self.central is CentralLink.UNKNOWN:
            return None
        return self.central is CentralLink.UP

    # --- the Central link --------------------------------------------------------------

    def central_accepted(self) -> None:
        self._told_on_link = None
        self._set_central(CentralLink.UP)

    def central_denied(self, reason: str) -> None:
        self._set_central(CentralLink.DENIED, reason)

    def central_lost(self) -> None:
        self._set_central(CentralLink.DOWN)

    def central_not_registered(self) -> None:
        """No credentials: the link loop does not even connect until the CP is registered."""
        self._set_central(CentralLink.NOT_REGISTERED)

    def _set_central(self, state: CentralLink, reason: str = "") -> None:
        changed = (state, reason) != (self.central, self.central_reason)
        self.central, self.central_reason = state, reason
        if changed:
            self._announce()
            self._on_change()

    def heartbeat_sent(self) -> None:
        self.counts = replace(self.counts, hb_sent=self.counts.hb_sent + 1)

    def heartbeat_answered(self) -> None:
        self.counts = replace(self.counts, hb_answered=self.counts.hb_answered + 1)

    def pending_report(self) -> Report | None:
        """What Central must be told now on this link, besides the heartbeat."""
        if self.health in (EngineHealth.KO, EngineHealth.UNREACHABLE):
            if isinstance(self._told_on_link, Fault):
                return None
            return Fault(self.health_reason)
        if self.health is EngineHealth.OK and self._fault_told:
            return Recover()
        return None

    def reported(self, report: Report) -> None:
        """Central answered OK to `report`."""
        self._told_on_link = report
        self._fault_told = isinstance(report, Fault)
        log.info(
            "cp=%s: Central told %s",
            self.cp_id,
            f"{Opcode.FAULT} ({report.reason})" if isinstance(report, Fault) else Opcode.RECOVER,
        )

    # --- what the operator reads ----------------------------------------------------------

    @property
    def troubled(self) -> bool:
        """Something an operator must look at (not merely "not known yet")."""
        return self.health in (EngineHealth.KO, EngineHealth.UNREACHABLE) or self.central in (
            CentralLink.DOWN,
            CentralLink.DENIED,
            CentralLink.NOT_REGISTERED,
        )

    def engine_text(self) -> str:
        if self.health is EngineHealth.KO:
            return f"Engine KO ({self.health_reason})"
        if self.health is EngineHealth.UNREACHABLE:
            return self.health_reason  # "Engine not answering: <why>"
        return "Engine OK" if self.health is EngineHealth.OK else "Engine not checked yet"

    def central_text(self) -> str:
        return {
            CentralLink.UNKNOWN: "Central not reached yet",
            CentralLink.UP: "Central up (authenticated)",
            CentralLink.DOWN: "Central down (reconnecting)",
            CentralLink.DENIED: f"Central refused the CP: {self.central_reason}",
            CentralLink.NOT_REGISTERED: "not registered (register with the Registry first)",
        }[self.central]

    def status_line(self) -> str:
        """E.g. `cp=ALC01 Engine OK · Central up (authenticated) · heartbeats 123/123 answered`."""
        c = self.counts
        return (
            f"cp={self.cp_id} {self.engine_text()} · {self.central_text()} · "
            f"heartbeats {c.hb_answered}/{c.hb_sent} answered"
        )

    def summary_line(self, seconds: float) -> str:
        """What happened since the last summary (`seconds` ago); the state too when it is bad."""
        now = self.counts
        d, self._summarised = now.minus(self._summarised), now
        line = (
            f"cp={self.cp_id} last {seconds:.0f}s: heartbeats {d.hb_answered}/{d.hb_sent} "
            f"answered, health checks {d.checks_ok}/{d.checks} OK"
        )
        problems = [
            f"{n} {what}"
            for n, what in ((d.checks_ko, EngineHealth.KO), (d.checks_unanswered, "unanswered"))
            if n
        ]
        if problems:
            line += f" ({', '.join(problems)})"
        if self.troubled:
            line += f" · {self.engine_text()} · {self.central_text()}"
        return line

    def _announce(self) -> None:
        """One status line per change of the Engine's health or of Central's link."""
        log.log(logging.WARNING if self.troubled else logging.INFO, "%s", self.status_line())
