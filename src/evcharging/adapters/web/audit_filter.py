"""The audit log as both HTTP APIs serve it (`GET /api/audit`, `GET /api/v1/audit`): one set of
query parameters, one reading of them (a time without an offset is UTC, the log's clock), one
answer shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, cast

from fastapi import Depends, Query

from evcharging.adapters.audit_file import as_json
from evcharging.contracts.audit import AuditAction
from evcharging.services.audit import AuditQuery
from evcharging.services.central import CentralService
from evcharging.services.central_views import AuditJson


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def audit_query(
    since: Annotated[datetime | None, Query(description="from (ISO 8601; no offset: UTC)")] = None,
    until: Annotated[datetime | None, Query(description="before (ISO 8601)")] = None,
    cp: Annotated[str | None, Query(description="only rows about this CP id")] = None,
    action: Annotated[AuditAction | None, Query(description="only this action")] = None,
    ip: Annotated[str | None, Query(description="only rows from this address")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AuditQuery:
    return AuditQuery(
        since=_utc(since),
        until=_utc(until),
        cp_id=cp,
        action=action,
        ip=ip,
        limit=limit,
        offset=offset,
    )


AuditFilter = Annotated[AuditQuery, Depends(audit_query)]


def audit_rows(service: CentralService, query: AuditQuery) -> list[AuditJson]:
    """The rows `query` selects, newest first, as the API answers them."""
    return [cast(AuditJson, as_json(entry)) for entry in service.audit_rows(query)]
