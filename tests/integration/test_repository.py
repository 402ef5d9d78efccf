"""The Repository on both databases: SQLite (:memory: and files) and a real PostgreSQL.

One suite: every repository test runs on each backend (the `repo` fixture's parameter).  The
PostgreSQL server is ours (tests/support/postgres.py), one per pytest-xdist worker, a fresh
database per test; without its binaries those cases are skipped and say why.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evcharging
from evcharging.adapters.db import CannotOpenDatabase, migrations, open_repository
from evcharging.adapters.db.migrations import available, migrate
from evcharging.adapters.db.postgres_repository import PostgresRepository
from evcharging.adapters.db.seed import SeedError, load_seed_file, seed
from evcharging.adapters.db.sql_repository import SqlRepository
from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.domain.money import cost, euros, kwh
from evcharging.domain.session import (
    EndReason,
    Session,
    SessionStatus,
    end_session,
    open_session,
    record_reading,
)
from evcharging.services.audit import AuditEntry, AuditQuery
from evcharging.services.cp_auth import Verifier, make_verifier, new_secret
from evcharging.services.ports import RegistryChange, RegistryChangeKind
from tests.support import postgres as pg
from tests.support.builders import a_cp, a_driver, unique
from tests.support.ports import free_port
from tests.support.waiting import eventually_sync

SAMPLE = Path(evcharging.__file__).resolve().parent / "data" / "sample_network.yaml"
LATEST = max(version for version, _ in available())
TABLES = {"drivers", "charging_points", "sessions"}
T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[pg.Databases]:
    """One PostgreSQL server for this worker; skipped only when its binaries are missing."""
    missing = pg.binaries_missing()
    if missing:
        pytest.skip(f"PostgreSQL binaries missing: {missing}")
    with pg.databases() as dbs:
        yield dbs


@pytest.fixture
def pg_url(pg_databases: pg.Databases) -> Iterator[str]:
    """A fresh PostgreSQL schema (migrated when the repository opens it), dropped after."""
    url = pg_databases.fresh()
    yield url
    pg_databases.drop(url)


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest) -> Iterator[SqlRepository]:
    if request.param == "sqlite":
        r: SqlRepository = SqliteRepository(":memory:")
    else:
        r = PostgresRepository(request.getfixturevalue("pg_url"))
    yield r
    r.close()


def a_session(
    repo: SqlRepository,
    cp_id: str = "CP01",
    driver_id: str = "D001",
    started_at: datetime = T0,
) -> Session:
    """An authorised session stored in repo (its CP and driver are created if missing)."""
    if repo.get_cp(cp_id) is None:
        a_cp(repo, cp_id)
    if repo.get_driver(driver_id) is None:
        a_driver(repo, driver_id)
    cp = repo.get_cp(cp_id)
    assert cp is not None
    session = open_session(unique("S"), driver_id, cp_id, cp.price_eur_per_kwh, now=started_at)
    assert repo.create_session(session, request_id=unique("R"))
    return session


def ended(session: Session, energy: str, reason: EndReason = EndReason.UNPLUGGED) -> Session:
    done = end_session(
        record_reading(session, Decimal(energy)), reason, now=T0 + timedelta(hours=1)
    )
    assert done is not None
    return done


def record(repo: SqlRepository, session_id: str, energy: Decimal, amount: Decimal) -> None:
    repo.record_energies([(session_id, energy, amount)])


def table_names(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


# --- migrations ----------------------------------------------------------------------------------


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [version for version, _ in available()]
    assert versions == list(range(1, LATEST + 1))


def test_migrate_creates_the_schema_on_an_empty_database() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        assert migrate(conn) == LATEST
        assert table_names(conn) >= TABLES
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
    finally:
        conn.close()


def test_migration_2_drops_the_unused_processed_events_table() -> None:
    """A database made by 0001 (with rows in processed_events) loses the table, keeps the rest."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        first = dict(available())[1]
        conn.executescript(f"BEGIN;\n{first}\nPRAGMA user_version = 1;\nCOMMIT;")
        conn.execute("INSERT INTO processed_events VALUES ('e1', 'CHARGING_TICKET', 'now')")
        conn.execute("INSERT INTO drivers VALUES ('D1', 'Ana', 1000)")
        assert migrate(conn) == LATEST >= 2
        assert "processed_events" not in table_names(conn)
        assert conn.execute("SELECT driver_id FROM drivers").fetchall() == [("D1",)]
    finally:
        conn.close()


def test_migrate_twice_applies_nothing_the_second_time(caplog: pytest.LogCaptureFixture) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        migrate(conn)
        caplog.clear()
        assert migrate(conn) == LATEST
        assert not [r for r in caplog.records if "applying migration" in r.getMessage()]
    finally:
        conn.close()


def test_a_failing_migration_leaves_no_trace_and_the_version_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = (1, "CREATE TABLE t1 (x INTEGER);")
    bad = (2, "CREATE TABLE t2 (x INTEGER);\nINSERT INTO no_such_table VALUES (1);")
    monkeypatch.setattr(migrations, "available", lambda dialect: [good, bad])
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError):
            migrate(conn)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert "t1" in table_names(conn)
        assert "t2" not in table_names(conn)
    finally:
        conn.close()


def test_repository_on_memory_is_at_the_latest_version(repo: SqlRepository) -> None:
    assert repo.schema_version == LATEST


def test_file_database_is_migrated_once_and_reopens_with_its_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "nested" / "central.db"
    first = SqliteRepository(path)
    a_cp(first, "CP01")
    a_driver(first, "D001", balance="45.50")
    first.close()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="evcharging.adapters.db.migrations"):
        second = SqliteRepository(path)
    try:
        assert second.schema_version == LATEST
        assert not [r for r in caplog.records if "applying migration" in r.getMessage()]
        assert [cp.cp_id for cp in second.list_cps()] == ["CP01"]
        driver = second.get_driver("D001")
        assert driver is not None
        assert driver.balance_eur == Decimal("45.50")
    finally:
        second.close()

    conn = sqlite3.connect(path)
    try:
        assert table_names(conn) >= TABLES
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
    finally:
        conn.close()


# --- seeding -------------------------------------------------------------------------------------


def table_counts(repo: SqlRepository) -> tuple[int, int]:
    drivers = repo._db.execute("SELECT COUNT(*) AS n FROM drivers").fetchone()["n"]
    return len(repo.list_cps()), int(drivers)


def test_the_sample_network_is_large_enough() -> None:
    data = load_seed_file(SAMPLE)
    cps = data["charging_points"]
    cities = {str(cp["location"]).split(" - ")[0] for cp in cps}
    assert len(cps) >= 10
    assert len(cities) >= 3
    assert len(data["drivers"]) >= 5


def test_seeding_the_sample_loads_every_cp_and_driver(repo: SqlRepository) -> None:
    result = seed(repo, load_seed_file(SAMPLE))
    assert table_counts(repo) == (result.cps, result.drivers)
    assert result.cps >= 10
    assert result.drivers >= 5


def test_seeding_the_sample_twice_adds_no_rows(repo: SqlRepository) -> None:
    data = load_seed_file(SAMPLE)
    seed(repo, data)
    counts = table_counts(repo)
    seed(repo, data)
    assert table_counts(repo) == counts


def test_seeding_again_keeps_a_balance_earned_since(repo: SqlRepository) -> None:
    data = load_seed_file(SAMPLE)
    seed(repo, data)
    session = a_session(repo, cp_id="ALC01", driver_id="D001")  # 0.35 EUR/kWh, 150.00 EUR
    assert repo.close_session(ended(session, "10")) == Decimal("146.50")

    seed(repo, data)

    driver = repo.get_driver("D001")
    assert driver is not None
    assert driver.balance_eur == Decimal("146.50")


def test_sample_money_is_stored_exactly(repo: SqlRepository) -> None:
    seed(repo, load_seed_file(SAMPLE))
    driver = repo.get_driver("D004")
    cp = repo.get_cp("ALC01")
    assert driver is not None
    assert cp is not None
    assert str(driver.balance_eur) == "45.50"
    assert isinstance(cp.price_eur_per_kwh, Decimal)
    assert str(cp.price_eur_per_kwh) == "0.35"


def test_seed_accepts_json(tmp_path: Path, repo: SqlRepository) -> None:
    path = tmp_path / "net.json"
    path.write_text(
        json.dumps(
            {
                "charging_points": [{"id": "J1", "location": "Elche", "price_eur_per_kwh": "0.31"}],
                "drivers": [{"id": "DJ", "name": "Jo", "balance_eur": "9.99"}],
            }
        ),
        encoding="utf-8",
    )
    result = seed(repo, load_seed_file(path))
    assert (result.cps, result.drivers) == (1, 1)
    cp = repo.get_cp("J1")
    assert cp is not None
    assert cp.price_eur_per_kwh == Decimal("0.31")


def test_seed_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(SeedError, match="expected a mapping"):
        load_seed_file(path)


def test_seed_entry_missing_a_field_is_refused(repo: SqlRepository) -> None:
    with pytest.raises(SeedError, match="price_eur_per_kwh"):
        seed(repo, {"charging_points": [{"id": "X", "location": "Nowhere"}]})


def test_empty_seed_loads_nothing(repo: SqlRepository) -> None:
    result = seed(repo, {})
    assert (result.cps, result.drivers) == (0, 0)


# --- charging points and drivers -----------------------------------------------------------------


def test_price_round_trips_as_decimal(repo: SqlRepository) -> None:
    record = repo.add_cp("CP01", "Alicante", Decimal("0.35"))
    assert record is not None
    assert record.price_eur_per_kwh == Decimal("0.35")
    assert isinstance(record.price_eur_per_kwh, Decimal)
    stored = repo.get_cp("CP01")
    assert stored == record


def test_the_seeds_upsert_updates_the_cp_in_place(repo: SqlRepository) -> None:
    repo.upsert_cp("CP01", "Alicante", Decimal("0.40"))
    repo.upsert_cp("CP01", "Elche", Decimal("0.45"))
    assert [(c.cp_id, c.location, c.price_eur_per_kwh) for c in repo.list_cps()] == [
        ("CP01", "Elche", Decimal("0.45"))
    ]


def test_adding_a_registered_cp_changes_nothing(repo: SqlRepository) -> None:
    """Issue point 8: registering an existing CP had silently overwritten its price."""
    assert repo.add_cp("CP01", "Alicante", Decimal("0.39")) is not None
    assert repo.add_cp("CP01", "Elche", Decimal("9.99")) is None
    assert [(c.cp_id, c.location, c.price_eur_per_kwh) for c in repo.list_cps()] == [
        ("CP01", "Alicante", Decimal("0.39"))
    ]


def test_update_sets_only_what_is_given(repo: SqlRepository) -> None:
    a_cp(repo, "CP01", price="0.40", location="Alicante")
    repo.set_cp_stopped("CP01", True)
    priced = repo.update_cp("CP01", price=Decimal("0.45"))
    assert priced is not None
    assert (priced.location, priced.price_eur_per_kwh) == ("Alicante", Decimal("0.45"))
    moved = repo.update_cp("CP01", location="Elche")
    assert moved is not None
    assert (moved.location, moved.price_eur_per_kwh, moved.admin_stopped) == (
        "Elche",
        Decimal("0.45"),
        True,
    )
    assert repo.update_cp("NOPE", location="X") is None
    assert [c.cp_id for c in repo.list_cps()] == ["CP01"]


def test_a_new_cp_is_neither_stopped_nor_in_error(repo: SqlRepository) -> None:
    cp = repo.get_cp(a_cp(repo))
    assert cp is not None
    assert not cp.admin_stopped
    assert not cp.error_simulated


def test_stop_and_error_flags_round_trip(repo: SqlRepository) -> None:
    cp_id = a_cp(repo)
    repo.set_cp_stopped(cp_id, True)
    repo.set_cp_error_simulated(cp_id, True)
    cp = repo.get_cp(cp_id)
    assert cp is not None
    assert (cp.admin_stopped, cp.error_simulated) == (True, True)

    repo.set_cp_stopped(cp_id, False)
    repo.set_cp_error_simulated(cp_id, False)
    cp = repo.get_cp(cp_id)
    assert cp is not None
    assert (cp.admin_stopped, cp.error_simulated) == (False, False)


def test_unknown_cp_and_driver_are_none(repo: SqlRepository) -> None:
    assert repo.get_cp("nope") is None
    assert repo.get_driver("nope") is None


def test_balance_is_stored_exactly(repo: SqlRepository) -> None:
    a_driver(repo, "D001", balance="45.50")
    driver = repo.get_driver("D001")
    assert driver is not None
    assert driver.balance_eur == Decimal("45.50")
    assert str(driver.balance_eur) == "45.50"


def test_list_cps_is_sorted_by_id(repo: SqlRepository) -> None:
    for cp_id in ("CP03", "CP01", "CP02"):
        a_cp(repo, cp_id)
    assert [c.cp_id for c in repo.list_cps()] == ["CP01", "CP02", "CP03"]


money = st.decimals(
    min_value=Decimal("-1000"), max_value=Decimal("100000"), places=2, allow_nan=False
)
unit_prices = st.decimals(min_value=Decimal("0"), max_value=Decimal("5"), places=4, allow_nan=False)
energies = st.decimals(
    min_value=Decimal("0"), max_value=Decimal("10000"), places=4, allow_nan=False
)


# One database per test, not per example: each example uses ids of its own.
per_test_repo = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@per_test_repo
@given(money, unit_prices)
def test_any_balance_and_price_round_trip_exactly(
    repo: SqlRepository, balance: Decimal, price: Decimal
) -> None:
    driver_id, cp_id = unique("D"), unique("CP")
    a_driver(repo, driver_id, balance=str(balance))
    repo.add_cp(cp_id, "Alicante", price)
    driver, cp = repo.get_driver(driver_id), repo.get_cp(cp_id)
    assert driver is not None
    assert cp is not None
    assert driver.balance_eur == euros(balance)
    assert cp.price_eur_per_kwh == price


@per_test_repo
@given(energies)
def test_any_energy_round_trips_to_the_watt_hour(repo: SqlRepository, energy: Decimal) -> None:
    session = a_session(repo, cp_id=unique("CP"), driver_id=unique("D"))
    record(repo, session.session_id, energy, cost(energy, session.price_eur_per_kwh))
    stored = repo.get_session(session.session_id)
    assert stored is not None
    assert stored.energy_kwh == kwh(energy)
    assert stored.amount_eur == cost(energy, session.price_eur_per_kwh)


# --- sessions ------------------------------------------------------------------------------------


def test_created_session_reads_back_unchanged(repo: SqlRepository) -> None:
    a_cp(repo, "CP01", price="0.35")
    a_driver(repo, "D001")
    session = open_session(unique("S"), "D001", "CP01", Decimal("0.35"), now=T0)
    request_id = unique("R")

    assert repo.create_session(session, request_id)

    assert repo.get_session(session.session_id) == session
    assert repo.session_by_request(request_id) == session
    assert repo.open_sessions() == [session]


def test_unknown_session_and_request_are_none(repo: SqlRepository) -> None:
    assert repo.get_session("nope") is None
    assert repo.session_by_request("nope") is None


def test_second_open_session_on_the_same_cp_is_refused(repo: SqlRepository) -> None:
    a_session(repo, cp_id="CP01", driver_id="D001")
    a_driver(repo, "D002")
    other = open_session(unique("S"), "D002", "CP01", Decimal("0.40"), now=T0)
    assert repo.create_session(other, unique("R")) is False
    assert repo.get_session(other.session_id) is None


def test_second_open_session_for_the_same_driver_is_refused(repo: SqlRepository) -> None:
    a_session(repo, cp_id="CP01", driver_id="D001")
    a_cp(repo, "CP02")
    other = open_session(unique("S"), "D001", "CP02", Decimal("0.40"), now=T0)
    assert repo.create_session(other, unique("R")) is False


def test_the_same_request_twice_is_refused(repo: SqlRepository) -> None:
    a_cp(repo, "CP01")
    a_cp(repo, "CP02")
    a_driver(repo, "D001")
    a_driver(repo, "D002")
    request_id = unique("R")
    first = open_session(unique("S"), "D001", "CP01", Decimal("0.40"), now=T0)
    again = open_session(unique("S"), "D002", "CP02", Decimal("0.40"), now=T0)
    assert repo.create_session(first, request_id) is True
    assert repo.create_session(again, request_id) is False
    assert repo.session_by_request(request_id) == first


def test_sessions_without_a_request_id_do_not_collide(repo: SqlRepository) -> None:
    a_cp(repo, "CP01")
    a_cp(repo, "CP02")
    a_driver(repo, "D001")
    a_driver(repo, "D002")
    one = open_session(unique("S"), "D001", "CP01", Decimal("0.40"), now=T0)
    two = open_session(unique("S"), "D002", "CP02", Decimal("0.40"), now=T0)
    assert repo.create_session(one, None)
    assert repo.create_session(two, None)


def test_a_closed_session_frees_the_cp_and_the_driver(repo: SqlRepository) -> None:
    first = a_session(repo, cp_id="CP01", driver_id="D001")
    repo.close_session(ended(first, "1"))
    again = open_session(unique("S"), "D001", "CP01", Decimal("0.40"), now=T0)
    assert repo.create_session(again, unique("R"))


def test_mark_supplying_moves_an_authorised_session_only(repo: SqlRepository) -> None:
    session = a_session(repo)
    repo.mark_supplying(session.session_id)
    stored = repo.get_session(session.session_id)
    assert stored is not None
    assert stored.status is SessionStatus.SUPPLYING

    repo.close_session(ended(session, "1"))
    repo.mark_supplying(session.session_id)
    stored = repo.get_session(session.session_id)
    assert stored is not None
    assert stored.status is SessionStatus.ENDED


def test_recording_energy_stores_energy_and_amount_exactly(repo: SqlRepository) -> None:
    session = a_session(repo)
    record(repo, session.session_id, Decimal("12.345"), Decimal("4.94"))
    stored = repo.get_session(session.session_id)
    assert stored is not None
    assert stored.energy_kwh == Decimal("12.345")
    assert stored.amount_eur == Decimal("4.94")


def test_recording_energy_never_lowers_energy(repo: SqlRepository) -> None:
    session = a_session(repo)
    record(repo, session.session_id, Decimal("5.000"), Decimal("2.00"))
    record(repo, session.session_id, Decimal("3.000"), Decimal("1.20"))
    stored = repo.get_session(session.session_id)
    assert stored is not None
    assert stored.energy_kwh == Decimal("5.000")


def test_a_stale_reading_does_not_lower_the_stored_amount(repo: SqlRepository) -> None:
    session = a_session(repo)  # 0.40 EUR/kWh
    record(repo, session.session_id, Decimal("5.000"), cost(Decimal("5.000"), Decimal("0.40")))
    record(repo, session.session_id, Decimal("3.000"), cost(Decimal("3.000"), Decimal("0.40")))
    stored = repo.get_session(session.session_id)
    assert stored is not None
    assert stored.amount_eur == cost(stored.energy_kwh, stored.price_eur_per_kwh) == Decimal("2.00")


def test_recording_energy_after_the_end_changes_nothing(repo: SqlRepository) -> None:
    session = a_session(repo)
    repo.close_session(ended(session, "2"))
    record(repo, session.session_id, Decimal("9"), Decimal("3.60"))
    stored = repo.get_session(session.session_id)
    assert stored is not None
    assert stored.energy_kwh == Decimal("2.000")
    assert stored.amount_eur == Decimal("0.80")


def test_close_session_debits_the_driver_and_stores_the_ticket(repo: SqlRepository) -> None:
    a_driver(repo, "D001", balance="45.50")
    session = a_session(repo, cp_id="CP01", driver_id="D001")  # 0.40 EUR/kWh
    done = ended(session, "12.345", EndReason.STOPPED_BY_DRIVER)  # 4.94 EUR

    assert repo.close_session(done) == Decimal("40.56")

    stored = repo.get_session(session.session_id)
    assert stored == done
    driver = repo.get_driver("D001")
    assert driver is not None
    assert driver.balance_eur == Decimal("40.56")
    assert repo.open_sessions() == []


def test_close_session_debits_exactly_once(repo: SqlRepository) -> None:
    a_driver(repo, "D001", balance="100.00")
    done = ended(a_session(repo, driver_id="D001"), "10")  # 4.00 EUR

    assert repo.close_session(done) == Decimal("96.00")
    assert repo.close_session(done) is None

    driver = repo.get_driver("D001")
    assert driver is not None
    assert driver.balance_eur == Decimal("96.00")


def test_close_session_of_an_unknown_session_is_none(repo: SqlRepository) -> None:
    a_cp(repo)
    a_driver(repo, balance="10.00")
    stray = ended(open_session(unique("S"), "D001", "CP01", Decimal("0.40"), now=T0), "1")
    assert repo.close_session(stray) is None
    driver = repo.get_driver("D001")
    assert driver is not None
    assert driver.balance_eur == Decimal("10.00")


@pytest.mark.parametrize("reason", list(EndReason))
def test_every_end_reason_round_trips(repo: SqlRepository, reason: EndReason) -> None:
    done = ended(a_session(repo), "1", reason)
    repo.close_session(done)
    stored = repo.get_session(done.session_id)
    assert stored is not None
    assert stored.end_reason is reason


def test_find_sessions_filters_by_driver_cp_and_status(repo: SqlRepository) -> None:
    old = a_session(repo, cp_id="CP01", driver_id="D001", started_at=T0)
    repo.close_session(ended(old, "1"))
    mine_now = a_session(repo, cp_id="CP02", driver_id="D001", started_at=T0 + timedelta(hours=2))
    theirs = a_session(repo, cp_id="CP01", driver_id="D002", started_at=T0 + timedelta(hours=3))

    def ids(found: Sequence[Session]) -> list[str]:
        return [s.session_id for s in found]

    assert ids(repo.find_sessions(driver_id="D001")) == [mine_now.session_id, old.session_id]
    assert ids(repo.find_sessions(cp_id="CP01")) == [theirs.session_id, old.session_id]
    assert ids(repo.find_sessions(status="ended")) == [old.session_id]
    assert ids(repo.find_sessions(driver_id="D001", status="authorised")) == [mine_now.session_id]
    assert ids(repo.find_sessions(driver_id="D002", cp_id="CP02")) == []
    assert len(repo.find_sessions()) == 3
    assert ids(repo.find_sessions(limit=1)) == [theirs.session_id]
    pages = [ids(repo.find_sessions(limit=1, offset=k)) for k in range(4)]
    assert pages == [[theirs.session_id], [mine_now.session_id], [old.session_id], []]


def test_unsent_tickets_until_marked_sent(repo: SqlRepository) -> None:
    still_open = a_session(repo, cp_id="CP01", driver_id="D001")
    done = ended(a_session(repo, cp_id="CP02", driver_id="D002"), "3")
    repo.close_session(done)

    assert [s.session_id for s in repo.unsent_tickets()] == [done.session_id]
    assert still_open.session_id not in {s.session_id for s in repo.unsent_tickets()}

    repo.mark_ticket_sent(done.session_id)
    assert repo.unsent_tickets() == []


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"id": "A B", "location": "Alicante", "price_eur_per_kwh": "0.30"}, "id"),
        ({"id": "CP9", "location": "", "price_eur_per_kwh": "0.30"}, "location"),
        ({"id": "CP9", "location": "x" * 201, "price_eur_per_kwh": "0.30"}, "location"),
        ({"id": "CP9", "location": "Alicante", "price_eur_per_kwh": "0"}, "price_eur_per_kwh"),
        ({"id": "CP9", "location": "Alicante"}, "price_eur_per_kwh"),
    ],
)
def test_a_seed_entry_breaking_the_contracts_field_rules_is_refused_and_nothing_is_written(
    repo: SqlRepository, entry: dict[str, str], field: str
) -> None:
    good = {"id": "CP1", "location": "Alicante", "price_eur_per_kwh": "0.30"}
    with pytest.raises(SeedError, match=field):
        seed(repo, {"charging_points": [good, entry]})
    assert repo.get_cp("CP1") is None


# --- credentials and the Registry's change feed ---------------------------------------------------


def a_verifier() -> Verifier:
    return make_verifier(new_secret(), n=2**4)  # a cheap scrypt: these tests store, not stretch


def kinds(changes: Sequence[RegistryChange]) -> list[tuple[str, RegistryChangeKind]]:
    return [(c.cp_id, c.kind) for c in changes]


def test_enrolling_a_new_cp_stores_it_its_verifier_and_a_change(repo: SqlRepository) -> None:
    verifier = a_verifier()
    assert repo.enrol_cp("CP01", "Alicante", Decimal("0.35"), verifier)

    cp = repo.get_cp("CP01")
    assert cp is not None
    assert (cp.location, cp.price_eur_per_kwh) == ("Alicante", Decimal("0.35"))
    assert repo.get_verifier("CP01") == verifier
    assert repo.registered_cps() == {"CP01"}
    assert kinds(repo.registry_changes(0)) == [("CP01", RegistryChangeKind.REGISTERED)]
    assert repo.last_registry_change() == repo.registry_changes(0)[0].seq


def test_enrolling_a_cp_the_admin_made_keeps_its_row_and_sets_location_and_price(
    repo: SqlRepository,
) -> None:
    repo.add_cp("CP01", "Alicante", Decimal("0.35"))
    repo.set_cp_stopped("CP01", True)
    assert repo.enrol_cp("CP01", "Elche", Decimal("0.41"), a_verifier())
    cp = repo.get_cp("CP01")
    assert cp is not None
    assert (cp.location, cp.price_eur_per_kwh, cp.admin_stopped) == (
        "Elche",
        Decimal("0.41"),
        True,
    )


def test_enrolling_a_cp_with_credentials_changes_nothing(repo: SqlRepository) -> None:
    first = a_verifier()
    assert repo.enrol_cp("CP01", "Alicante", Decimal("0.35"), first)
    assert not repo.enrol_cp("CP01", "Elche", Decimal("9.99"), a_verifier())

    cp = repo.get_cp("CP01")
    assert cp is not None
    assert (cp.location, cp.price_eur_per_kwh) == ("Alicante", Decimal("0.35"))
    assert repo.get_verifier("CP01") == first
    assert len(repo.registry_changes(0)) == 1


def test_rotating_replaces_the_verifier_of_a_registered_cp_only(repo: SqlRepository) -> None:
    assert not repo.rotate_credentials("CP01", a_verifier())
    repo.enrol_cp("CP01", "Alicante", Decimal("0.35"), a_verifier())
    newer = a_verifier()
    assert repo.rotate_credentials("CP01", newer)
    assert repo.get_verifier("CP01") == newer
    assert kinds(repo.registry_changes(0)) == [
        ("CP01", RegistryChangeKind.REGISTERED),
        ("CP01", RegistryChangeKind.ROTATED),
    ]


def test_deregistering_drops_the_credentials_and_keeps_the_cp_and_its_sessions(
    repo: SqlRepository,
) -> None:
    repo.enrol_cp("CP01", "Alicante", Decimal("0.35"), a_verifier())
    session = a_session(repo, cp_id="CP01")

    assert repo.deregister_cp("CP01")
    assert not repo.deregister_cp("CP01")

    assert repo.get_verifier("CP01") is None
    assert repo.registered_cps() == set()
    assert repo.get_cp("CP01") is not None
    assert repo.get_session(session.session_id) == session
    assert repo.enrol_cp("CP01", "Alicante", Decimal("0.35"), a_verifier())  # again, later
    assert [c.kind for c in repo.registry_changes(0)] == [
        RegistryChangeKind.REGISTERED,
        RegistryChangeKind.DEREGISTERED,
        RegistryChangeKind.REGISTERED,
    ]


def test_the_change_feed_is_read_after_a_sequence_number(repo: SqlRepository) -> None:
    assert repo.last_registry_change() == 0
    assert repo.registry_changes(0) == []
    for cp_id in ("CP01", "CP02", "CP03"):
        repo.enrol_cp(cp_id, "Alicante", Decimal("0.35"), a_verifier())
    first, *rest = repo.registry_changes(0)
    assert [c.seq for c in rest] == sorted(c.seq for c in rest)
    assert first.seq < rest[0].seq
    assert kinds(repo.registry_changes(first.seq)) == kinds(rest)
    assert repo.registry_changes(repo.last_registry_change()) == []


# --- the audit log -------------------------------------------------------------------------------


def an_entry(n: int, **changes: object) -> AuditEntry:
    entry = AuditEntry(
        at=T0 + timedelta(seconds=n),
        action=AuditAction.AUTH_OK,
        actor=f"cp:CP{n:02d}",
        ip="10.0.0.1",
        cp_id=f"CP{n:02d}",
        detail=f"entry {n}",
        params={"n": str(n)},
    )
    return replace(entry, **changes)  # type: ignore[arg-type]


def test_audit_entries_read_back_newest_first_with_their_sequence(repo: SqlRepository) -> None:
    written = [an_entry(n) for n in range(3)]
    for entry in written:
        repo.append_audit(entry)
    found = repo.find_audit(AuditQuery())
    assert [replace(e, seq=None) for e in found] == written[::-1]
    seqs = [e.seq for e in found]
    assert all(isinstance(s, int) for s in seqs)
    assert seqs == sorted(seqs, reverse=True)  # type: ignore[type-var]


def test_audit_is_filtered_by_time_cp_action_and_ip_and_paged(repo: SqlRepository) -> None:
    repo.append_audit(an_entry(1))
    repo.append_audit(an_entry(2, action=AuditAction.AUTH_FAILED, outcome=Outcome.DENIED))
    repo.append_audit(an_entry(3, ip="192.168.1.9", cp_id=None))
    repo.append_audit(an_entry(4))

    def details(**query: object) -> list[str]:
        return [e.detail for e in repo.find_audit(AuditQuery(**query))]  # type: ignore[arg-type]

    assert details(since=T0 + timedelta(seconds=2)) == ["entry 4", "entry 3", "entry 2"]
    assert details(until=T0 + timedelta(seconds=2)) == ["entry 1"]
    assert details(cp_id="CP04") == ["entry 4"]
    assert details(action=AuditAction.AUTH_FAILED) == ["entry 2"]
    assert details(ip="192.168.1.9") == ["entry 3"]
    assert details(limit=2) == ["entry 4", "entry 3"]
    assert details(limit=2, offset=2) == ["entry 2", "entry 1"]
    (denied,) = repo.find_audit(AuditQuery(action=AuditAction.AUTH_FAILED))
    assert denied.outcome is Outcome.DENIED
    assert denied.params == {"n": "2"}


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_log SET ip = 'forged'", "DELETE FROM audit_log"],
)
def test_the_database_refuses_to_change_or_delete_audit_rows(
    repo: SqlRepository, statement: str
) -> None:
    repo.append_audit(an_entry(1))
    with pytest.raises(repo._dialect.integrity_error, match="append-only"):
        repo._db.execute(statement)
    assert [e.ip for e in repo.find_audit(AuditQuery())] == ["10.0.0.1"]


# --- PostgreSQL only: its migrations, concurrency and truncation -----------------------------------


def test_postgres_refuses_to_truncate_the_audit_log(pg_url: str) -> None:
    repo = PostgresRepository(pg_url)
    try:
        repo.append_audit(an_entry(1))
        with pytest.raises(psycopg.IntegrityError, match="append-only"):
            repo._db.execute("TRUNCATE audit_log")
        assert len(repo.find_audit(AuditQuery())) == 1
    finally:
        repo.close()


def pg_versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]


def test_postgres_migrates_an_empty_database_once(
    pg_databases: pg.Databases, caplog: pytest.LogCaptureFixture
) -> None:
    url = pg_databases.fresh()
    try:
        first = PostgresRepository(url)
        a_cp(first, "CP01")
        first.close()
        caplog.clear()
        second = PostgresRepository(url)
        try:
            assert second.schema_version == LATEST
            assert not [r for r in caplog.records if "applying migration" in r.getMessage()]
            assert [cp.cp_id for cp in second.list_cps()] == ["CP01"]
        finally:
            second.close()
        assert pg_versions(url) == list(range(1, LATEST + 1))
    finally:
        pg_databases.drop(url)


def test_postgres_migrations_started_at_once_apply_each_migration_once(
    pg_databases: pg.Databases,
) -> None:
    """Central and the Registry starting together on one fresh database."""
    url = pg_databases.fresh()
    starters = 4
    ready = threading.Barrier(starters)

    def start() -> int:
        ready.wait()
        repo = PostgresRepository(url)
        repo.close()
        return repo.schema_version

    try:
        with ThreadPoolExecutor(starters) as pool:
            versions = list(pool.map(lambda _: start(), range(starters)))
        assert versions == [LATEST] * starters
        assert pg_versions(url) == list(range(1, LATEST + 1))
    finally:
        pg_databases.drop(url)


def test_a_failing_postgres_migration_leaves_no_trace(
    pg_databases: pg.Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = (1, "CREATE TABLE t1 (x INTEGER);")
    bad = (2, "CREATE TABLE t2 (x INTEGER);\nINSERT INTO no_such_table VALUES (1);")
    monkeypatch.setattr(migrations, "available", lambda dialect: [good, bad])
    url = pg_databases.fresh()
    try:
        with pytest.raises(psycopg.errors.UndefinedTable):
            PostgresRepository(url)
        assert pg_versions(url) == [1]
        with psycopg.connect(url) as conn:
            tables = {
                t
                for (t,) in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                )
            }
        assert "t1" in tables
        assert "t2" not in tables
    finally:
        pg_databases.drop(url)


def test_concurrent_enrolments_of_one_cp_on_postgres_let_exactly_one_win(pg_url: str) -> None:
    racers = 4
    ready = threading.Barrier(racers)
    repos = [PostgresRepository(pg_url) for _ in range(racers)]

    def enrol(repo: SqlRepository) -> bool:
        ready.wait()
        return repo.enrol_cp("CP01", f"at {id(repo)}", Decimal("0.35"), a_verifier())

    try:
        with ThreadPoolExecutor(racers) as pool:
            won = list(pool.map(enrol, repos))
        assert sorted(won) == [False] * (racers - 1) + [True]
        assert len(repos[0].registry_changes(0)) == 1
    finally:
        for r in repos:
            r.close()


def test_concurrent_amendments_on_postgres_bill_the_difference_once(pg_url: str) -> None:
    """Two amendments both read the old amount before either writes: only a row lock on the
    read (SELECT ... FOR UPDATE) keeps the second from debiting the difference again.  A third
    connection holds the driver's row so that both are surely in flight together."""
    setup, blocker, one, two = (PostgresRepository(pg_url) for _ in range(4))
    a_driver(setup, "D001", balance="100.00")
    done = ended(a_session(setup, driver_id="D001"), "10")  # 0.40 EUR/kWh: 4.00
    setup.close_session(done)
    pool = ThreadPoolExecutor(2)

    def amend(repo: SqlRepository) -> Decimal | None:
        return repo.amend_energy(done.session_id, Decimal("12"), Decimal("4.80"))

    try:
        with blocker._tx() as c:
            c.execute("SELECT 1 FROM drivers WHERE driver_id = ? FOR UPDATE", ("D001",))
            results = [pool.submit(amend, one), pool.submit(amend, two)]
            eventually_sync(
                lambda: (
                    blocker._db.execute(
                        "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    ).fetchone()["n"]
                    == 2
                ),
                what="both amendments waiting",
            )
        balances = [r.result() for r in results]
        assert [b for b in balances if b is not None] == [Decimal("95.20")]
        driver = setup.get_driver("D001")
        assert driver is not None
        assert driver.balance_eur == Decimal("95.20")
    finally:
        pool.shutdown()
        for r in (setup, blocker, one, two):
            r.close()


# --- choosing the database by --db -----------------------------------------------------------------


@pytest.mark.parametrize("form", ["{path}", "sqlite:///{path}"])
def test_open_repository_opens_a_sqlite_file_by_path_or_url(tmp_path: Path, form: str) -> None:
    path = tmp_path / "central.db"
    repo = open_repository(form.format(path=path))
    try:
        assert isinstance(repo, SqliteRepository)
        a_cp(repo, "CP01")
    finally:
        repo.close()
    assert path.is_file()


def test_open_repository_opens_sqlite_in_memory() -> None:
    repo = open_repository(":memory:")
    try:
        assert repo.dialect == "sqlite"
        assert repo.schema_version == LATEST
    finally:
        repo.close()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_open_repository_opens_postgres_by_url(pg_url: str, scheme: str) -> None:
    repo = open_repository(pg_url.replace("postgresql://", f"{scheme}://", 1))
    try:
        assert isinstance(repo, PostgresRepository)
        assert repo.schema_version == LATEST
    finally:
        repo.close()


@pytest.mark.parametrize(
    ("db", "says"),
    [
        ("mysql://root:hunter2@db/x", "'mysql'"),
        ("sqlite://relative.db", "sqlite:///PATH"),
        ("sqlite:///", "sqlite:///PATH"),
        ("", "file path"),
    ],
)
def test_open_repository_refuses_anything_else_without_echoing_it(db: str, says: str) -> None:
    with pytest.raises(ValueError, match="unsupported database") as refused:
        open_repository(db)
    assert says in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_a_registry_change_never_commits_before_an_earlier_one_on_postgres(pg_url: str) -> None:
    """A follower reads `seq > last seen`: had a later row committed first, the follower would
    move past the earlier one and never see it.  So a second writer waits for the first."""
    first, second, follower = (PostgresRepository(pg_url) for _ in range(3))
    pool = ThreadPoolExecutor(1)
    try:
        with first._tx() as c:
            first._change(c, "CP01", RegistryChangeKind.REGISTERED)  # seq 1, not committed
            later = pool.submit(second.enrol_cp, "CP02", "Elche", Decimal("0.35"), a_verifier())
            eventually_sync(
                lambda: follower._db.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'LOCK TABLE registry_changes%'"
                ).fetchone(),
                what="the second writer waiting for the first",
            )
            assert follower.registry_changes(0) == []
        assert later.result()
        assert kinds(follower.registry_changes(0)) == [
            ("CP01", RegistryChangeKind.REGISTERED),
            ("CP02", RegistryChangeKind.REGISTERED),
        ]
    finally:
        pool.shutdown()
        for r in (first, second, follower):
            r.close()


def test_a_postgres_server_that_is_not_there_is_one_clear_error() -> None:
    port = free_port()
    with pytest.raises(CannotOpenDatabase, match=f"PostgreSQL: .*{port}") as failed:
        open_repository(f"postgresql://ev:hunter2@127.0.0.1:{port}/evcharging?connect_timeout=5")
    assert "hunter2" not in str(failed.value)


def test_a_sqlite_file_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(CannotOpenDatabase, match="SQLite file"):
        open_repository(str(blocker / "central.db"))


def test_after_losing_its_connection_the_postgres_repository_connects_again(
    pg_url: str, pg_databases: pg.Databases
) -> None:
    """The call that found the connection gone fails; the next one works (nothing retried)."""
    repo = PostgresRepository(pg_url)
    try:
        a_cp(repo, "CP01")
        pid = repo._conn.info.backend_pid
        with psycopg.connect(pg.url_of(pg_databases.cfg, "postgres"), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):
            repo.get_cp("CP01")
        assert [cp.cp_id for cp in repo.list_cps()] == ["CP01"]
        assert repo._conn.info.backend_pid != pid
    finally:
        repo.close()


def test_sqlite_migrations_are_safe_when_programs_open_a_new_file_at_once(tmp_path: Path) -> None:
    """Central and the Registry share one file and may start together: nobody fails on CREATE."""
    db = tmp_path / "shared.db"
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            SqliteRepository(db).close()
        except sqlite3.Error as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    repo = SqliteRepository(db)
    try:
        assert repo.schema_version == max(v for v, _ in available("sqlite"))
    finally:
        repo.close()


# --- per-CP keys (issue 14) -------------------------------------------------------------------


def test_key_versions_count_up_per_cp_and_never_go_back(repo: SqlRepository) -> None:
    a_cp(repo, "CP01")
    a_cp(repo, "CP02")
    assert repo.key_versions() == {}
    assert [repo.next_key_version("CP01") for _ in range(3)] == [1, 2, 3]
    assert repo.next_key_version("CP02") == 1
    repo.delete_cp_keys("CP01")  # deleting keys does not rewind the counter
    assert repo.next_key_version("CP01") == 4
    assert repo.key_versions() == {"CP01": 4, "CP02": 1}
    with pytest.raises(LookupError, match="no CP"):
        repo.next_key_version("NOPE")


def test_sealed_keys_are_stored_listed_and_deleted_by_version_or_all(repo: SqlRepository) -> None:
    a_cp(repo, "CP01")
    a_cp(repo, "CP02")
    for cp_id, version in (("CP01", 1), ("CP01", 2), ("CP02", 1)):
        repo.save_cp_key(cp_id, version, f"sealed-{cp_id}-{version}")
    assert [(k.cp_id, k.version, k.sealed) for k in repo.stored_cp_keys()] == [
        ("CP01", 1, "sealed-CP01-1"),
        ("CP01", 2, "sealed-CP01-2"),
        ("CP02", 1, "sealed-CP02-1"),
    ]
    repo.delete_cp_keys("CP01", [1])
    assert [(k.cp_id, k.version) for k in repo.stored_cp_keys()] == [("CP01", 2), ("CP02", 1)]
    repo.delete_cp_keys("CP01")
    assert [(k.cp_id, k.version) for k in repo.stored_cp_keys()] == [("CP02", 1)]


def test_the_keys_revoked_mark_is_kept_on_the_cp_row(repo: SqlRepository) -> None:
    a_cp(repo, "CP01")
    cp = repo.get_cp("CP01")
    assert cp is not None
    assert not cp.keys_revoked
    repo.set_keys_revoked("CP01", True)
    cp = repo.get_cp("CP01")
    assert cp is not None
    assert cp.keys_revoked
    repo.set_keys_revoked("CP01", False)
    assert not any(c.keys_revoked for c in repo.list_cps())
