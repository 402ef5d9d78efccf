"""Issue 16: the admin asks a CP to report its status or to reset, through Central's one admin
front door (`services/admin.py`): the reply, the refusals, the audit row, the event sent."""

from __future__ import annotations

from typing import Any

import pytest

from evcharging.contracts import events as ev
from evcharging.contracts.audit import AuditAction
from evcharging.services.admin import (
    AdminDesk,
    AdminRefusal,
    Caller,
    Command,
    Refusal,
    ReportStatus,
    ResetCP,
    Transport,
)
from evcharging.services.audit import AuditEntry, AuditQuery
from evcharging.services.central import CentralService
from tests.support.builders import a_cp, a_repo
from tests.support.fakes import RecordingPublisher

TOKEN = "s3cret-admin-token"
ADMIN = Caller(Transport.HTTP, "10.0.0.7:51000", who="admin", ip="10.0.0.7")


@pytest.fixture
async def desk() -> AdminDesk:
    repo = a_repo()
    a_cp(repo, "CP1")
    a_cp(repo, "CP2")
    central = CentralService(repo, RecordingPublisher())
    await central.load()
    assert (await central.monitor_auth("CP1", object())).ok  # CP2 stays Desconectado
    return AdminDesk(central, TOKEN)


def sent(desk: AdminDesk) -> list[ev.Event]:
    publisher = desk.service.publisher
    assert isinstance(publisher, RecordingPublisher)
    return [e for e in publisher.sent if isinstance(e, (ev.CpReportStatus, ev.CpReset))]


def admin_rows(desk: AdminDesk) -> list[AuditEntry]:
    found = desk.service.audit_rows(AuditQuery(limit=100))
    return [r for r in reversed(found) if r.action.value.startswith("admin.")]


@pytest.mark.parametrize(
    ("name", "fields", "done", "message", "event"),
    [
        (
            Command.REPORT_STATUS,
            {"cp_id": "CP1"},
            "status_asked",
            "CP CP1 asked to report its status",
            ev.CpReportStatus(cp_id="CP1"),
        ),
        (
            Command.RESET_CP,
            {"cp_id": "CP1"},
            "reset_asked",
            "CP CP1 asked to reset (soft)",
            ev.CpReset(cp_id="CP1", hard=False),
        ),
        (
            Command.RESET_CP,
            {"cp_id": "CP1", "hard": True},
            "reset_asked",
            "CP CP1 asked to reset (hard)",
            ev.CpReset(cp_id="CP1", hard=True),
        ),
    ],
)
async def test_an_ask_is_done_sent_said_and_audited_with_the_callers_ip(
    desk: AdminDesk,
    name: Command,
    fields: dict[str, Any],
    done: str,
    message: str,
    event: ev.Event,
) -> None:
    reply = await desk.act(ADMIN, name, fields)
    assert (reply.done, reply.message) == (done, message)
    assert reply.cp is not None
    assert (reply.cp.id, reply.cp.state.value) == ("CP1", "Activado")
    [asked] = sent(desk)
    assert asked.model_dump(exclude={"source", "ts", "event_id"}) == event.model_dump(
        exclude={"source", "ts", "event_id"}
    )
    assert desk.service.messages()[-1].text == message
    [row] = admin_rows(desk)
    assert (row.action, row.actor, row.ip, row.cp_id, row.detail) == (
        AuditAction.ADMIN_ACTION,
        "admin",
        "10.0.0.7",
        "CP1",
        message,
    )
    assert (row.params["command"], row.params["transport"]) == (name.value, "http")


@pytest.mark.parametrize(
    ("cp_id", "kind", "reason"),
    [
        ("NOPE", Refusal.UNKNOWN_CP, "unknown CP NOPE"),
        ("CP2", Refusal.CONFLICT, "CP CP2 is Desconectado: no Monitor link, so nobody would hear"),
    ],
)
@pytest.mark.parametrize("command", [ReportStatus, ResetCP])
async def test_an_ask_nobody_would_hear_is_refused_audited_and_not_sent(
    desk: AdminDesk,
    command: type[ReportStatus] | type[ResetCP],
    cp_id: str,
    kind: Refusal,
    reason: str,
) -> None:
    with pytest.raises(AdminRefusal) as refused:
        await desk.run(ADMIN, command(cp_id=cp_id))
    assert refused.value.kind is kind
    assert refused.value.reason.startswith(reason)
    assert sent(desk) == []
    [row] = admin_rows(desk)
    assert (row.action, row.ip, row.cp_id, row.params["command"]) == (
        AuditAction.ADMIN_REFUSED,
        "10.0.0.7",
        cp_id,
        command.name.value,
    )


async def test_a_reset_field_that_is_no_boolean_is_refused(desk: AdminDesk) -> None:
    with pytest.raises(AdminRefusal) as refused:
        desk.command(ADMIN, Command.RESET_CP, {"cp_id": "CP1", "hard": "very"})
    assert refused.value.kind is Refusal.INVALID
    assert refused.value.reason.startswith("invalid fields: hard:")
