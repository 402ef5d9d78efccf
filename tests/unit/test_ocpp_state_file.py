"""EV_OCPP's state files (`JsonGatewayStore`): what a restarted gateway needs to bill a
StopTransaction, one file per transaction written atomically, ids never repeated, and a file that
cannot be read set aside, never a crash."""

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
from evcharging.adapters.ocpp_state_file import RESERVE, JsonGatewayStore, fresh_first_id
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


def saved(store: JsonGatewayStore, state: GatewayState) -> None:
    store.gateway(state.next_transaction_id, state.inoperative)
    for tx in state.transactions:
        store.put(tx)


def test_a_missing_folder_starts_fresh(tmp_path: Path) -> None:
    before = fresh_first_id()
    state = JsonGatewayStore(tmp_path / "state").load()
    assert state.transactions == ()
    assert state.inoperative == frozenset()
    assert before <= state.next_transaction_id <= fresh_first_id()


def test_what_is_saved_is_loaded_and_each_transaction_is_a_file(tmp_path: Path) -> None:
    store = JsonGatewayStore(tmp_path / "state")  # the folder is made on the first write
    saved(store, GatewayState(44, (RUNNING, ENDED, REFUSED), frozenset({"OCPP02", "OCPP09"})))
    again = JsonGatewayStore(tmp_path / "state").load()
    assert set(again.transactions) == {RUNNING, ENDED, REFUSED}
    assert again.inoperative == frozenset({"OCPP02", "OCPP09"})
    assert again.next_transaction_id == 44 + RESERVE  # ids reserved ahead: none repeats
    files = sorted(p.name for p in store.folder.iterdir())
    assert files == ["gateway.json", "tx-41.json", "tx-42.json", "tx-43.json"]
    assert json.loads(store.tx_path(42).read_text())["price_eur_per_kwh"] == "0.1234"


def test_a_delivered_end_deletes_its_file_and_nothing_else_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JsonGatewayStore(tmp_path)
    store.load()
    saved(store, GatewayState(44, (RUNNING, ENDED)))
    writes: list[str] = []
    real_replace = os.replace

    def spy(src: str | Path, dst: str | Path) -> None:
        writes.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(ocpp_state_file.os, "replace", spy)
    store.drop(ENDED.transaction_id)
    store.gateway(45, frozenset())  # within the reserved block: not written
    store.put(RUNNING)
    assert writes == ["tx-41.json"]
    assert {t.transaction_id for t in JsonGatewayStore(tmp_path).load().transactions} == {41}


def test_ids_never_repeat_across_restarts(tmp_path: Path) -> None:
    store = JsonGatewayStore(tmp_path)
    first = store.load().next_transaction_id
    handed = first + RESERVE + 7  # more than a block handed out: a new block reserved
    for n in range(first, handed):
        store.gateway(n + 1, frozenset())
    assert JsonGatewayStore(tmp_path).load().next_transaction_id >= handed


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
@given(tx=records)
def test_round_trip(tmp_path: Path, tx: TransactionRecord) -> None:
    store = JsonGatewayStore(tmp_path)
    store.put(tx)
    assert tx in JsonGatewayStore(tmp_path).load().transactions
    store.drop(tx.transaction_id)


def test_a_write_that_fails_leaves_the_last_good_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = JsonGatewayStore(tmp_path)
    store.put(ENDED)

    def no_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ocpp_state_file.os, "replace", no_replace)
    store.put(TransactionRecord(42, "OCPP02", 2, "D002", 0, "t"))
    monkeypatch.undo()
    assert JsonGatewayStore(tmp_path).load().transactions == (ENDED,)  # the old one, whole
    assert "cannot write the gateway's state" in caplog.text


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "null",
        "[]",
        '{"transaction_id": 1}',
        '{"transaction_id": 1, "cp_id": "A", "connector_id": 1, "id_tag": "D1",'
        ' "meter_start_wh": 0, "started_at": "t", "session_id": 123}',
        '{"transaction_id": 1, "cp_id": "A", "connector_id": 1, "id_tag": "D1",'
        ' "meter_start_wh": 0, "started_at": "t", "end_reason": "bogus"}',
    ],
)
def test_an_unreadable_transaction_is_moved_aside_and_the_others_load(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = JsonGatewayStore(tmp_path)
    store.put(RUNNING)
    bad = store.folder / "tx-7.json"
    bad.write_text(content)
    assert store.load().transactions == (RUNNING,)
    assert not bad.exists()
    assert (store.folder / "tx-7.corrupt").read_text() == content
    assert "unreadable" in caplog.text


@pytest.mark.parametrize(
    "content", ["{not json", "[]", '{"next_transaction_id": "x"}', '{"inoperative": 5}']
)
def test_an_unreadable_gateway_file_is_moved_aside_and_ids_start_fresh(
    tmp_path: Path, content: str
) -> None:
    store = JsonGatewayStore(tmp_path)
    store.folder.mkdir(parents=True)
    store.meta.write_text(content)
    before = fresh_first_id()
    state = store.load()
    assert before <= state.next_transaction_id <= fresh_first_id()
    assert (store.folder / "gateway.corrupt").read_text() == content


def test_fresh_ids_are_seconds_since_2023_11_14_and_fit_ocpp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ocpp_state_file.time, "time", lambda: 1_700_000_000 + 86_400.7)
    assert fresh_first_id() == 86_400
    monkeypatch.setattr(ocpp_state_file.time, "time", lambda: 0.0)
    assert fresh_first_id() == 1  # a clock before 2023 still gives a transaction id
    assert fresh_first_id() < 2**31
