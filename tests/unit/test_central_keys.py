"""Central's per-CP keys over the real SQLite repository: issue, at rest, restart, retire, revoke."""

from __future__ import annotations

import logging
from decimal import Decimal
from uuid import uuid4

import pytest

from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.contracts.events import CpTelemetry
from evcharging.contracts.sealed import RejectKind
from evcharging.services.central_keys import CentralKeys, KeyState
from evcharging.services.cp_keys import CpTopicCodec, KeyRing, MasterKey, RecordRejected
from tests.support.builders import a_cp


@pytest.fixture
def repo() -> SqliteRepository:
    r = SqliteRepository(":memory:")
    a_cp(r, "CP1")
    a_cp(r, "CP2")
    return r


def engine_with(*keys: object) -> CpTopicCodec:
    codec = CpTopicCodec(KeyRing())
    for key in keys:
        codec.ring.install(key)  # type: ignore[arg-type]
    return codec


def reading(cp_id: str = "CP1") -> CpTelemetry:
    return CpTelemetry(
        cp_id=cp_id,
        session_id=uuid4(),
        driver_id="D1",
        seq=1,
        kw=Decimal(7),
        energy_kwh=Decimal("0.5"),
        amount_eur=Decimal("0.2"),
    )


def test_an_issued_key_is_stored_sealed_and_survives_a_restart(repo: SqliteRepository) -> None:
    master = MasterKey(MasterKey.generate())
    keys = CentralKeys(repo, master)
    key = keys.issue("CP1")
    assert key.version == 1
    (row,) = repo.stored_cp_keys()
    assert key.secret.hex() not in row.sealed
    assert key.secret not in row.sealed.encode()
    restarted = CentralKeys(repo, master)
    assert restarted.load() == 1
    value = engine_with(key).encode(reading())
    assert restarted.codec.decode("cp-events", value) is not None
    assert restarted.state("CP1") == KeyState(version=1, issued=1)


def test_a_new_key_retires_the_old_one_once_used(repo: SqliteRepository) -> None:
    keys = CentralKeys(repo, MasterKey(MasterKey.generate()))
    first, second = keys.issue("CP1"), keys.issue("CP1")
    assert [k.version for k in repo.stored_cp_keys()] == [1, 2]
    assert keys.codec.decode("cp-events", engine_with(first).encode(reading())) is not None
    assert keys.codec.decode("cp-events", engine_with(second).encode(reading())) is not None
    assert [k.version for k in repo.stored_cp_keys()] == [2]
    with pytest.raises(RecordRejected) as caught:
        keys.codec.decode("cp-events", engine_with(first).encode(reading()))
    assert caught.value.kind is RejectKind.OLD_KEY


def test_revocation_deletes_every_key_and_survives_a_restart(repo: SqliteRepository) -> None:
    master = MasterKey(MasterKey.generate())
    keys = CentralKeys(repo, master)
    key = keys.issue("CP1")
    keys.issue("CP2")
    assert keys.revoke("CP1") == [1]
    assert [k.cp_id for k in repo.stored_cp_keys()] == ["CP2"]
    restarted = CentralKeys(repo, master)
    restarted.load()
    with pytest.raises(RecordRejected) as caught:
        restarted.codec.decode("cp-events", engine_with(key).encode(reading()))
    assert caught.value.kind is RejectKind.OLD_KEY
    assert restarted.state("CP1") == KeyState(version=None, issued=1)
    assert restarted.issue("CP1").version == 2


def test_keys_under_another_master_key_are_skipped_and_said_once(
    repo: SqliteRepository, caplog: pytest.LogCaptureFixture
) -> None:
    CentralKeys(repo, MasterKey(MasterKey.generate())).issue("CP1")
    other = CentralKeys(repo, MasterKey(MasterKey.generate()))
    with caplog.at_level(logging.WARNING):
        assert other.load() == 0
    assert [r.getMessage() for r in caplog.records if "do not open" in r.getMessage()] == [
        "1 stored CP keys do not open with this master key: those CPs get new keys when their "
        "Monitors authenticate again"
    ]
    assert other.state("CP1").version is None
