"""EV_OCPP's state file (`JsonGatewayStore`): what a restarted gateway needs to bill a
StopTransaction, written atomically, and a file that cannot be read set aside, never a crash."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evcharging.adapters import ocpp_state_file
from evcharging.adapters.ocpp_state_file import JsonGatewayStore, fresh_first_id
from evcharging.contracts.end_reasons import SupplyEndReason
from evcharging.services.ports import GatewayState, TransactionRecord

RUNNING = TransactionRecord(
    transaction_id=41,
    cp_id="OCPP01",
    connector_id=1,
    id_tag="D001",
    meter_start_wh=1000,
    started_at="2026-12-02T02:00:00Z",
    session_id=str(uuid4()),
    price_eur_per_kwh=Decimal("0.35"),
)
ENDED = TransactionRecord(
    transaction_id=42,
    cp_id="OCPP02",
    connector_id=2,
    id_tag="D002",
    meter_start_wh=0,
    started_at="2026-12-02T02:10:00.123+01:00",
    session_id=str(uuid4()),
    price_eur_per_kwh=Decimal("0.1234"),
    meter_stop_wh=3234,
    end_reason=SupplyEndReason.STOPPED_BY_CENTRAL,
)
REFUSED = TransactionRecord(43, "OCPP01", 1, "D003", 500, "2026-12-02T02:20:00Z")
STATE = GatewayState(44, (RUNNING, ENDED, REFUSED), frozenset({"OCPP02", "OCPP09"}))


def test_a_missing_file_starts_fresh(tmp_path: Path) -> None:
    before = fresh_first_id()
    state = JsonGatewayStore(tmp_path / "state").load()
    assert state.transactions == ()
    assert state.inoperative == frozenset()
    assert before <= state.next_transaction_id <= fresh_first_id()


def test_what_is_saved_is_loaded(tmp_path: Path) -> None:
    store = JsonGatewayStore(tmp_path / "state")  # the folder is made on the first save
    store.save(STATE)
    assert JsonGatewayStore(tmp_path / "state").load() == STATE
    body = json.loads(store.path.read_text())
    assert body["transactions"][1]["price_eur_per_kwh"] == "0.1234"  # decimals as strings


records = st.builds(
    TransactionRecord,
    transaction_id=st.integers(1, 2**31 - 1),
    cp_id=st.from_regex(r"[A-Z0-9]{1,10}", fullmatch=True),
    connector_id=st.integers(0, 9),
    id_tag=st.from_regex(r"D[0-9]{1,5}", fullmatch=True),
    meter_start_wh=st.integers(0, 2**31 - 1),
    started_at=st.text(max_size=40),
    session_id=st.none() | st.uuids().map(str),
    price_eur_per_kwh=st.none() | st.decimals("0.0001", "100", places=4),
    meter_stop_wh=st.none() | st.integers(0, 2**31 - 1),
    end_reason=st.none() | st.sampled_from(list(SupplyEndReason)),
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    next_id=st.integers(1, 2**31 - 1),
    transactions=st.lists(records, max_size=5),
    inoperative=st.frozensets(st.from_regex(r"[A-Z0-9]{1,10}", fullmatch=True), max_size=3),
)
def test_round_trip(
    tmp_path: Path, next_id: int, transactions: list[TransactionRecord], inoperative: frozenset[str]
) -> None:
    store = JsonGatewayStore(tmp_path)
    state = GatewayState(next_id, tuple(transactions), inoperative)
    store.save(state)
    assert store.load() == state


def test_a_write_that_fails_leaves_the_last_good_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = JsonGatewayStore(tmp_path)
    store.save(STATE)

    def no_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ocpp_state_file.os, "replace", no_replace)
    store.save(GatewayState(99))
    monkeypatch.undo()
    assert store.load() == STATE  # the file is the old one, whole
    assert "cannot write the gateway's state" in caplog.text


def test_a_save_writes_a_temporary_file_then_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JsonGatewayStore(tmp_path)
    store.save(GatewayState(7))
    replaced: list[tuple[str, str, GatewayState]] = []
    real_replace = os.replace

    def spy(src: str | Path, dst: str | Path) -> None:
        # at the moment of the swap the new content is complete and the old file untouched
        new = json.loads(Path(src).read_text())
        replaced.append((Path(src).name, Path(dst).name, JsonGatewayStore(tmp_path).load()))
        assert new["next_transaction_id"] == 44
        real_replace(src, dst)

    monkeypatch.setattr(ocpp_state_file.os, "replace", spy)
    store.save(STATE)
    monkeypatch.undo()
    assert [(a, b, s.next_transaction_id) for a, b, s in replaced] == [
        ("ocpp-gateway.json.tmp", "ocpp-gateway.json", 7)
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ocpp-gateway.json"]


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "null",
        "[]",
        '{"next_transaction_id": "x", "transactions": []}',
        '{"transactions": []}',
        '{"next_transaction_id": 5, "transactions": null}',
        '{"next_transaction_id": 5, "transactions": [{"transaction_id": 1}]}',
        '{"next_transaction_id": 5, "transactions": ["x"]}',
        '{"next_transaction_id": 5, "transactions": [], "inoperative": 5}',
        '{"next_transaction_id": 5, "transactions": [{"transaction_id": 1, "cp_id": "A",'
        ' "connector_id": 1, "id_tag": "D1", "meter_start_wh": 0, "started_at": "t",'
        ' "session_id": 123}]}',
        '{"next_transaction_id": 5, "transactions": [{"transaction_id": 1, "cp_id": "A",'
        ' "connector_id": 1, "id_tag": "D1", "meter_start_wh": 0, "started_at": "t",'
        ' "end_reason": "bogus"}]}',
    ],
)
def test_an_unreadable_file_is_moved_aside_and_ids_start_fresh(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = JsonGatewayStore(tmp_path)
    store.path.write_text(content)
    before = fresh_first_id()
    state = store.load()
    assert state.transactions == ()
    assert before <= state.next_transaction_id <= fresh_first_id()
    assert not store.path.exists()
    assert (tmp_path / "ocpp-gateway.corrupt").read_text() == content
    assert "unreadable" in caplog.text
    store.save(state)  # the gateway goes on with a fresh file
    assert store.load() == state


def test_fresh_ids_are_seconds_since_2023_11_14_and_fit_ocpp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ocpp_state_file.time, "time", lambda: 1_700_000_000 + 86_400.7)
    assert fresh_first_id() == 86_400
    monkeypatch.setattr(ocpp_state_file.time, "time", lambda: 0.0)
    assert fresh_first_id() == 1  # a clock before 2023 still gives a transaction id
    assert fresh_first_id() < 2**31
