"""The Registry's rules (alta, rotation, baja, consulta), on SQLite :memory: with a fake clock."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from evcharging.adapters import credentials_file
from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.apps import cli
from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.domain.throttle import FailureThrottle
from evcharging.services.audit import Audit, AuditEntry, AuditQuery
from evcharging.services.cp_auth import secret_matches
from evcharging.services.registry import (
    AdminToken,
    Caller,
    CPSecret,
    Refusal,
    RegistryRefusal,
    RegistryService,
    Unreadable,
)
from tests.support.builders import a_cp
from tests.support.clock import Clock

IP = "10.0.0.7"
ADMIN_TOKEN = "admin-token-for-tests"


@pytest.fixture
def repo() -> Iterator[SqliteRepository]:
    repo = SqliteRepository(":memory:")
    yield repo
    repo.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(repo: SqliteRepository, clock: Clock) -> RegistryService:
    throttle = FailureThrottle(free=2, free_per_address=2, first=4.0)
    return RegistryService(repo, Audit([repo]), throttle, clock, admin_token=ADMIN_TOKEN)


def rows(repo: SqliteRepository, action: AuditAction | None = None) -> list[AuditEntry]:
    return list(repo.find_audit(AuditQuery(action=action, limit=1000)))


def refused(kind: Refusal) -> pytest.RaisesExc[RegistryRefusal]:
    return pytest.raises(RegistryRefusal, check=lambda e: e.kind is kind)


def no_secret_in_audit(repo: SqliteRepository, *secrets: str) -> None:
    text = repr(rows(repo))
    for secret in secrets:
        assert secret not in text


def test_a_new_cp_is_registered_with_a_secret_only_its_verifier_stored(
    service: RegistryService, repo: SqliteRepository
) -> None:
    issued = service.register("ALC01", "Alicante", "0.35", Caller(IP))
    assert not issued.rotated
    assert issued.json["cp_id"] == "ALC01"
    assert issued.json["price_eur_per_kwh"] == "0.35"
    assert issued.json["registered_at"]
    verifier = repo.get_verifier("ALC01")
    assert verifier is not None
    assert secret_matches(verifier, issued.secret)
    assert issued.secret not in repr(issued)
    [row] = rows(repo, AuditAction.CP_REGISTERED)
    assert (row.actor, row.ip, row.cp_id, row.outcome) == ("cp:ALC01", IP, "ALC01", Outcome.OK)
    no_secret_in_audit(repo, issued.secret)


def test_a_cp_row_without_credentials_may_be_registered(
    service: RegistryService, repo: SqliteRepository
) -> None:
    a_cp(repo, "MAD01", price="0.50", location="Madrid")
    issued = service.register("MAD01", "Madrid Norte", Decimal("0.45"), Caller(IP))
    assert not issued.rotated
    record = repo.get_cp("MAD01")
    assert record is not None
    assert (record.location, record.price_eur_per_kwh) == ("Madrid Norte", Decimal("0.45"))


def test_registering_again_without_proof_is_409_and_changes_nothing(
    service: RegistryService, repo: SqliteRepository
) -> None:
    first = service.register("ALC01", "Alicante", "0.35", Caller(IP))
    before = repo.get_verifier("ALC01")
    with refused(Refusal.ALREADY_REGISTERED):
        service.register("ALC01", "Elsewhere", "0.99", Caller("10.9.9.9"))
    assert repo.get_verifier("ALC01") == before
    assert secret_matches(before, first.secret)  # type: ignore[arg-type]
    record = repo.get_cp("ALC01")
    assert record is not None
    assert record.location == "Alicante"
    [row] = rows(repo, AuditAction.REGISTRY_REFUSED)
    assert (row.ip, row.outcome, row.cp_id) == ("10.9.9.9", Outcome.DENIED, "ALC01")


def test_the_cp_with_its_secret_rotates_it_and_the_old_one_no_longer_matches(
    service: RegistryService, repo: SqliteRepository
) -> None:
    first = service.register("ALC01", "Alicante", "0.35", Caller(IP))
    second = service.register("ALC01", "Alicante 2", "0.40", Caller(IP, CPSecret(first.secret)))
    assert second.rotated
    assert second.secret != first.secret
    verifier = repo.get_verifier("ALC01")
    assert verifier is not None
    assert secret_matches(verifier, second.secret)
    assert not secret_matches(verifier, first.secret)
    assert second.json["location"] == "Alicante 2"
    assert second.json["registered_at"] == first.json["registered_at"]  # the alta's time
    [row] = rows(repo, AuditAction.CREDENTIALS_ROTATED)
    assert (row.actor, row.ip) == ("cp:ALC01", IP)
    no_secret_in_audit(repo, first.secret, second.secret)


def test_an_admin_rotates_and_deregisters_with_the_token(
    service: RegistryService, repo: SqliteRepository
) -> None:
    service.register("ALC01", "Alicante", "0.35", Caller(IP))
    rotated = service.register("ALC01", "Alicante", "0.35", Caller(IP, AdminToken(ADMIN_TOKEN)))
    assert rotated.rotated
    service.deregister("ALC01", Caller(IP, AdminToken(ADMIN_TOKEN)))
    assert repo.get_verifier("ALC01") is None
    actors = {(r.action, r.actor) for r in rows(repo)}
    assert (AuditAction.CREDENTIALS_ROTATED, "admin") in actors
    assert (AuditAction.CP_DEREGISTERED, "admin") in actors
    no_secret_in_audit(repo, ADMIN_TOKEN)


def test_the_local_operator_registers_and_rotates_as_admin(
    service: RegistryService, repo: SqliteRepository
) -> None:
    first = service.register("ALC01", "Alicante", "0.35", Caller.operator())
    again = service.register("ALC01", "Alicante", "0.35", Caller.operator())
    assert (first.rotated, again.rotated) == (False, True)
    assert {(r.actor, r.ip) for r in rows(repo)} == {("admin", "-")}


def test_a_wrong_admin_token_is_refused_even_for_a_new_cp(
    service: RegistryService, repo: SqliteRepository
) -> None:
    with refused(Refusal.WRONG_PROOF):
        service.register("NEW01", "Nowhere", "0.30", Caller(IP, AdminToken("guess")))
    assert repo.get_cp("NEW01") is None
    [row] = rows(repo, AuditAction.AUTH_FAILED)
    assert (row.actor, row.detail) == ("admin", "wrong admin token")
    no_secret_in_audit(repo, "guess")


def test_without_an_admin_token_configured_no_bearer_is_admin(
    repo: SqliteRepository, clock: Clock
) -> None:
    service = RegistryService(repo, Audit([repo]), FailureThrottle(), clock)
    service.register("ALC01", "Alicante", "0.35", Caller(IP))
    with refused(Refusal.WRONG_PROOF):
        service.deregister("ALC01", Caller(IP, AdminToken("")))


def test_wrong_secrets_are_401_then_throttled_429_then_let_through_after_the_wait(
    service: RegistryService, repo: SqliteRepository, clock: Clock
) -> None:
    issued = service.register("ALC01", "Alicante", "0.35", Caller(IP))
    for _ in range(3):  # two free failures, the third imposes the first wait
        with refused(Refusal.WRONG_PROOF):
            service.register("ALC01", "Alicante", "0.35", Caller(IP, CPSecret("guess-5f3a")))
    with refused(Refusal.THROTTLED) as info:
        service.deregister("ALC01", Caller(IP, CPSecret(issued.secret)))  # refused unheard
    assert info.value.retry_after_seconds == 4
    assert repo.get_verifier("ALC01") is not None
    clock.now += 4.0
    service.deregister("ALC01", Caller(IP, CPSecret(issued.secret)))
    assert repo.get_verifier("ALC01") is None
    assert len(rows(repo, AuditAction.AUTH_FAILED)) == 3
    [throttled] = rows(repo, AuditAction.AUTH_THROTTLED)
    assert throttled.detail == "too many failed attempts; try again in 4 s"
    assert (throttled.ip, throttled.outcome) == (IP, Outcome.DENIED)
    no_secret_in_audit(repo, issued.secret, "guess-5f3a")


def test_the_throttle_keys_on_the_ip_too(service: RegistryService) -> None:
    """Guesses spread over many CPs from one address are slowed all the same."""
    for n in range(3):
        service.register(f"CP{n}", "Here", "0.30", Caller("10.0.0.8"))
        with refused(Refusal.WRONG_PROOF):
            service.deregister(f"CP{n}", Caller(IP, CPSecret("guess-5f3a")))
    service.register("CP9", "Here", "0.30", Caller("10.0.0.8"))
    with refused(Refusal.THROTTLED):
        service.deregister("CP9", Caller(IP, CPSecret("guess-5f3a")))


def test_deregistration_needs_proof_and_a_registered_cp(
    service: RegistryService, repo: SqliteRepository
) -> None:
    with refused(Refusal.NOT_FOUND):
        service.deregister("ALC01", Caller(IP))
    issued = service.register("ALC01", "Alicante", "0.35", Caller(IP))
    with refused(Refusal.PROOF_REQUIRED):
        service.deregister("ALC01", Caller(IP))
    service.deregister("ALC01", Caller(IP, CPSecret(issued.secret)))
    view = service.get("ALC01")
    assert view is not None
    assert (view.registered, view.registered_at) == (False, None)
    assert repo.get_cp("ALC01") is not None  # the row stays, for the history
    with refused(Refusal.NOT_FOUND):
        service.deregister("ALC01", Caller(IP, CPSecret(issued.secret)))
    [row] = rows(repo, AuditAction.CP_DEREGISTERED)
    assert (row.actor, row.ip) == ("cp:ALC01", IP)
    again = service.register("ALC01", "Alicante", "0.35", Caller(IP))  # may register again
    assert not again.rotated


def test_an_unreadable_proof_is_refused_unheard(service: RegistryService) -> None:
    service.register("ALC01", "Alicante", "0.35", Caller(IP))
    with refused(Refusal.WRONG_PROOF):
        service.deregister("ALC01", Caller(IP, Unreadable("unknown authorization scheme")))


@pytest.mark.parametrize(
    ("cp_id", "location", "price", "says"),
    [
        ("bad id!", "Alicante", "0.35", "cp_id: not an id"),
        ("ALC01", "", "0.35", "location"),
        ("ALC01", "Alicante", "0", "price_eur_per_kwh"),
        ("ALC01", "Alicante", "101", "price_eur_per_kwh"),
        ("ALC01", "x" * 201, "0.35", "location"),
    ],
)
def test_fields_follow_the_contract_rules(
    service: RegistryService,
    repo: SqliteRepository,
    cp_id: str,
    location: str,
    price: str,
    says: str,
) -> None:
    with refused(Refusal.INVALID) as info:
        service.register(cp_id, location, price, Caller(IP))
    assert says in info.value.reason
    assert repo.list_cps() == []
    [row] = rows(repo, AuditAction.REGISTRY_REFUSED)
    assert (row.ip, row.outcome) == (IP, Outcome.DENIED)


def test_reads_show_no_secret_and_the_registered_flag(
    service: RegistryService, repo: SqliteRepository
) -> None:
    a_cp(repo, "MAD01", location="Madrid")
    issued = service.register("ALC01", "Alicante", "0.35", Caller(IP))
    views = {v.cp_id: v.json for v in service.cps()}
    assert views["ALC01"]["registered"] is True
    assert views["ALC01"]["registered_at"] == issued.json["registered_at"]
    assert views["MAD01"] == {
        "cp_id": "MAD01",
        "location": "Madrid",
        "price_eur_per_kwh": "0.40",
        "registered": False,
        "registered_at": None,
    }
    assert service.get("NOPE") is None
    assert issued.secret not in repr(views)


def test_the_secret_is_never_logged(
    service: RegistryService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first = service.register("ALC01", "Alicante", "0.35", Caller(IP))
    second = service.register("ALC01", "Alicante", "0.35", Caller(IP, CPSecret(first.secret)))
    with refused(Refusal.WRONG_PROOF):
        service.deregister("ALC01", Caller(IP, AdminToken("not-the-token")))
    logged = caplog.text
    for secret in (first.secret, second.secret, "not-the-token", ADMIN_TOKEN):
        assert secret not in logged
    assert "registered ALC01 from 10.0.0.7" in logged


def test_cp_enrol_registers_at_the_database_and_writes_the_credentials_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, target = tmp_path / "net.db", tmp_path / "creds" / "cp-ALC01.json"
    argv = ["cp", "enrol", "ALC01", "--db", str(db), "--location", "Alicante", "--price", "0.35"]
    assert cli.main([*argv, "--credentials", str(target)]) == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    first = credentials_file.load(target)
    assert first is not None
    assert first.cp_id == "ALC01"
    out = capsys.readouterr().out
    assert "CP ALC01 registered" in out
    assert first.secret not in out
    repo = SqliteRepository(db)
    try:
        verifier = repo.get_verifier("ALC01")
        assert verifier is not None
        assert secret_matches(verifier, first.secret)
        [row] = rows(repo, AuditAction.CP_REGISTERED)
        assert (row.actor, row.ip) == ("admin", "-")
    finally:
        repo.close()
    assert cli.main([*argv, "--credentials", str(target)]) == 0  # again: an admin's rotation
    second = credentials_file.load(target)
    assert second is not None
    assert second.secret != first.secret
    assert "credentials rotated" in capsys.readouterr().out
