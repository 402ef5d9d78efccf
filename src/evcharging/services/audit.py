"""The audit log: who did what, from where, when; written by Central and the Registry.

Why a service: every security-relevant event (authentication, registration, admin action,
rejected message, state change) goes through `Audit.record`, which stamps the time and hands the
row to every sink: the database's append-only table (queried by `GET /api/audit`) and a rotated
JSON-lines file (for a SIEM to ship).  A sink that fails is logged and does not stop the others,
and never the action being audited.

What never goes in: secrets.  Callers pass ids, addresses and short descriptions; there is no
field for a token, a credential or a key, and `detail` is cut to `MAX_DETAIL` characters.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from evcharging.contracts.audit import AuditAction, Outcome

log = logging.getLogger(__name__)

MAX_DETAIL = 500
UNKNOWN_IP = "-"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row: (a) when, (b) who and from which IP, (c) what, (d) its parameters."""

    at: datetime
    action: AuditAction
    actor: str  # "cp:ALC01", "admin", "driver:D1", "ev_w", "registry", "central"
    ip: str  # the machine's address as seen by the receiver ("-" when none: Kafka, internal)
    outcome: Outcome = Outcome.OK
    cp_id: str | None = None
    detail: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    seq: int | None = None  # the database's row number once stored


@dataclass(frozen=True, slots=True)
class AuditQuery:
    since: datetime | None = None
    until: datetime | None = None
    cp_id: str | None = None
    action: AuditAction | None = None
    ip: str | None = None
    limit: int = 100
    offset: int = 0


class AuditSink(Protocol):
    def append_audit(self, entry: AuditEntry) -> None: ...


class AuditStore(AuditSink, Protocol):
    """A sink that can be searched (the database: the Repository is one)."""

    def find_audit(self, query: AuditQuery) -> Sequence[AuditEntry]: ...


def ip_of(peer: str | None) -> str:
    """ "10.0.0.2:51234" -> "10.0.0.2"; "[::1]:80" -> "::1"; None or "?" -> "-"."""
    if not peer or peer == "?":
        return UNKNOWN_IP
    host = peer.rsplit(":", 1)[0] if peer.count(":") == 1 or peer.startswith("[") else peer
    return host.strip("[]") or UNKNOWN_IP


class Audit:
    """The one way to write the audit log."""

    def __init__(self, sinks: Sequence[AuditSink] = (), clock: type[datetime] = datetime) -> None:
        self._sinks = list(sinks)
        self._clock = clock

    def add_sink(self, sink: AuditSink) -> None:
        self._sinks.append(sink)

    def record(
        self,
        action: AuditAction,
        *,
        actor: str,
        ip: str = UNKNOWN_IP,
        outcome: Outcome = Outcome.OK,
        cp_id: str | None = None,
        detail: str = "",
        **params: object,
    ) -> AuditEntry:
        entry = AuditEntry(
            at=self._clock.now(UTC),
            action=action,
            actor=actor,
            ip=ip or UNKNOWN_IP,
            outcome=outcome,
            cp_id=cp_id,
            detail=detail[:MAX_DETAIL],
            params={k: str(v)[:MAX_DETAIL] for k, v in params.items() if v is not None},
        )
        for sink in self._sinks:
            try:
                sink.append_audit(entry)
            except Exception:  # an audit sink down must not stop the action it records
                log.exception("audit sink %s failed; row %s not written there", sink, action)
        return entry
