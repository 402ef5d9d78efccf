"""The CP Monitor's rules: what the Engine's health is, and what Central must be told about it.

Why a service: the two socket loops (Central link, Engine link; `adapters/sockets/monitor_links`)
only move frames; every decision (heartbeat status, when to send FAULT or RECOVER, when to tell
the Engine its CP id or Central's state) is here, pure and unit-tested.

Reporting rule: Central is told FAULT once when the Engine turns KO or stops answering, and again
on each new Central link while the fault lasts (Central resets a CP's health when it
authenticates); RECOVER once when the Engine answers OK after a FAULT was sent.  The heartbeat
carries the same health (OK/KO) every interval.

The CP's key (issue 14): Central grants one at every authentication; the service keeps it (the
Engine link hands it over) and never shows more of it than its version.  When Central answers a
heartbeat `ERR#keys_revoked` the key is dropped, the Engine is told KEY_DROP and the operator
reads one notice (not one per heartbeat); heartbeats go on, so the CP stays Parado rather than
Desconectado.  With `auto_reauth` seconds the Monitor authenticates again by itself that long
after a revocation; without, the menu's A does it.

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
from evcharging.services.cp_keys import CpKey

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

    def __init__(
        self,
        cp_id: str,
        on_change: Callable[[], None] = lambda: None,
        *,
        auto_reauth: float | None = None,
    ) -> None:
        """`auto_reauth`: seconds after a revocation of the CP's keys to authenticate again
        unattended (None: only when the operator asks, menu A)."""
        self.cp_id = cp_id
        self._on_change = on_change
        self.auto_reauth = auto_reauth
        self.health = EngineHealth.UNKNOWN
        self.health_reason = ""
        self.central = CentralLink.UNKNOWN
        self.central_reason = ""  # why Central refused the CP
        self.counts = Counts()
        self._summarised = Counts()  # the counts at the last summary
        self._fault_told: bool = False  # the last thing Central was told was a FAULT
        self._told_on_link: Report | None = None  # what this Central link has been told
        self._key: CpKey | None = None  # the CP's newest key from Central (never shown)
        self._revoked_at: float | None = None  # when Central said keys_revoked (None: not now)
        self.revocations = 0  # how many times Central revoked the keys (the Engine link's cue)

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

    def central_accepted(self, key: CpKey | None = None) -> None:
        """Central accepted the CP (and proved it knows it), granting `key`."""
        self._told_on_link = None
        if key is not None:
            self.key_granted(key)
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

    # --- the CP's key -------------------------------------------------------------------

    @property
    def key(self) -> CpKey | None:
        """The key to hand the Engine (None: none granted yet, or revoked since)."""
        return self._key

    @property
    def keys_revoked(self) -> bool:
        return self._revoked_at is not None

    def key_granted(self, key: CpKey) -> None:
        """A new key from Central (every authentication grants one)."""
        back = self.keys_revoked
        self._key, self._revoked_at = key, None
        if back:
            log.info(
                "cp=%s: authenticated again: new key v%s, the CP is back in service",
                self.cp_id,
                key.version,
            )
        else:
            log.info("cp=%s: key v%s from Central", self.cp_id, key.version)
        self._on_change()

    def central_revoked_keys(self, now: float) -> bool:
        """Central answered a heartbeat `ERR#keys_revoked` (it does so at every heartbeat while
        revoked): the key is dropped and the operator told, the first time only.  True then."""
        if self.keys_revoked:
            return False
        self._key, self._revoked_at = None, now
        self.revocations += 1
        log.warning("cp=%s: %s", self.cp_id, self.revoked_notice())
        self._on_change()
        return True

    def revoked_notice(self) -> str:
        if self.auto_reauth is None:
            return "Central revoked this CP's keys: press A to authenticate again"
        return (
            f"Central revoked this CP's keys: authenticating again in {self.auto_reauth:g}s "
            "(--auto-reauth), or press A now"
        )

    def reauth_in(self, now: float) -> float | None:
        """Seconds until the unattended re-authentication after a revocation is due (0 or less:
        now); None when none is pending (keys not revoked, or no `auto_reauth`)."""
        if self._revoked_at is None or self.auto_reauth is None:
            return None
        return self._revoked_at + self.auto_reauth - now

    def key_to_hand(self, handed: int | None) -> CpKey | None:
        """The key the Engine must be given, when `handed` (the version it got on this link,
        None: none yet) is not the newest."""
        key = self._key
        return key if key is not None and key.version != handed else None

    def drops_told_at_link_start(self) -> int:
        """A new Engine link counts as told every revocation but a current one."""
        return self.revocations - 1 if self.keys_revoked else self.revocations

    def drop_due(self, told: int) -> bool:
        """KEY_DROP is due on a link told `told` revocations (once per revocation)."""
        return self.revocations > told

    def key_text(self) -> str:
        if self.keys_revoked:
            return "keys revoked"
        return f"key v{self._key.version}" if self._key is not None else "no key"

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
        bad_links = (CentralLink.DOWN, CentralLink.DENIED, CentralLink.NOT_REGISTERED)
        engine_bad = self.health in (EngineHealth.KO, EngineHealth.UNREACHABLE)
        return engine_bad or self.keys_revoked or self.central in bad_links

    def engine_text(self) -> str:
        if self.health is EngineHealth.KO:
            return f"Engine KO ({self.health_reason})"
        if self.health is EngineHealth.UNREACHABLE:
            return self.health_reason  # "Engine not answering: <why>"
        return "Engine OK" if self.health is EngineHealth.OK else "Engine not checked yet"

    def central_text(self) -> str:
        """Central's link, and once authenticated the key's version (never the key)."""
        if self.central is CentralLink.UP and (self._key is not None or self.keys_revoked):
            if self.keys_revoked:
                return "Central up (keys revoked: press A to authenticate again)"
            return f"Central up (authenticated, {self.key_text()})"
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
