"""The CP Monitor's rules: what the Engine's health is, and what Central must be told about it.

Why a service: the two socket loops (Central link, Engine link; `adapters/sockets/monitor_links`)
only move frames; every decision (heartbeat status, when to send FAULT or RECOVER, when to tell
the Engine its CP id or Central's state) is here, pure and unit-tested.

Reporting rule: Central is told FAULT once when the Engine turns KO or stops answering, and again
on each new Central link while the fault lasts (Central resets a CP's health when it
authenticates); RECOVER once when the Engine answers OK after a FAULT was sent.  The heartbeat
carries the same health (OK/KO) every interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger(__name__)


class EngineHealth(StrEnum):
    UNKNOWN = "unknown"  # not checked yet
    OK = "OK"
    KO = "KO"  # the Engine answers KO#reason
    UNREACHABLE = "unreachable"  # no answer: refused, timed out, link lost


class CentralLink(StrEnum):
    UNKNOWN = "unknown"  # not tried yet
    UP = "up"  # authenticated, heartbeats answered
    DOWN = "down"  # cannot connect, or the link failed
    DENIED = "denied"  # Central refused the CP


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


class MonitorService:
    """One CP's Monitor; `on_change` is called whenever a link loop may have something to send."""

    def __init__(self, cp_id: str, on_change: Callable[[], None] = lambda: None) -> None:
        self.cp_id = cp_id
        self._on_change = on_change
        self.health = EngineHealth.UNKNOWN
        self.health_reason = ""
        self.central = CentralLink.UNKNOWN
        self._fault_told: bool = False  # the last thing Central was told was a FAULT
        self._told_on_link: Report | None = None  # what this Central link has been told

    # --- the Engine link ---------------------------------------------------------------

    def engine_ok(self) -> None:
        if self.health is not EngineHealth.OK:
            log.info("cp=%s: Engine health OK", self.cp_id)
        self._set_health(EngineHealth.OK, "")

    def engine_ko(self, reason: str) -> None:
        reason = reason or "Engine KO"
        if (self.health, self.health_reason) != (EngineHealth.KO, reason):
            log.warning("cp=%s: Engine reports KO: %s", self.cp_id, reason)
        self._set_health(EngineHealth.KO, reason)

    def engine_unreachable(self, reason: str) -> None:
        if self.health is not EngineHealth.UNREACHABLE:
            log.warning("cp=%s: Engine not answering: %s", self.cp_id, reason)
        self._set_health(EngineHealth.UNREACHABLE, f"Engine not answering: {reason}")

    def _set_health(self, health: EngineHealth, reason: str) -> None:
        changed = health is not self.health
        self.health, self.health_reason = health, reason
        if changed:
            self._on_change()

    @property
    def has_verdict(self) -> bool:
        return self.health is not EngineHealth.UNKNOWN

    @property
    def heartbeat_status(self) -> str:
        """HB#cp#OK|KO: OK only when the Engine answered OK."""
        return "OK" if self.health is EngineHealth.OK else "KO"

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
        if self.central is not CentralLink.UP:
            log.info("cp=%s: Central accepted the CP", self.cp_id)
        self._told_on_link = None
        self._set_central(CentralLink.UP)

    def central_denied(self, reason: str) -> None:
        log.warning("cp=%s: Central refused the CP: %s", self.cp_id, reason)
        self._set_central(CentralLink.DENIED)

    def central_lost(self) -> None:
        self._set_central(CentralLink.DOWN)

    def _set_central(self, state: CentralLink) -> None:
        changed = state is not self.central
        self.central = state
        if changed:
            self._on_change()

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
            f"FAULT ({report.reason})" if isinstance(report, Fault) else "RECOVER",
        )

    def status_line(self) -> str:
        health = self.health.value + (f" ({self.health_reason})" if self.health_reason else "")
        return f"cp={self.cp_id} Engine {health}, Central {self.central.value}"
