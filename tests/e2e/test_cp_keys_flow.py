"""Release 2, part 2, end to end: a key per CP on every Engine <-> Central record.

Real processes and broker. A plain Kafka consumer sees nothing of a supply in clear; forged,
altered, replayed and revoked-key records are refused and audited and change nothing; a revoke
mid-supply ends it with a ticket and keeps the CP out of service until its Monitor authenticates
again; a Central restart keeps the keys (sealed at rest) and the Engine goes on without noticing.
"""

from __future__ import annotations

import json
import signal
from decimal import Decimal
from uuid import uuid4

import pytest

from evcharging.contracts.events import BadEvent, CpTelemetry, Event, parse_event
from evcharging.contracts.topics import CP_COMMANDS, CP_EVENTS
from evcharging.services.cp_auth import b64
from evcharging.services.cp_keys import CpKey, CpTopicCodec, KeyRing, RecordRejected
from tests.support.cp_keys import held_keys, produce, read_topic, sealed_with
from tests.support.processes import Network, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

IN_CLEAR = (b"D001", b"D002", b"CP_TELEMETRY", b"SUPPLY_", b"STOP_SUPPLY", b"energy_kwh", b'"kw"')


def rejected_kinds(net: Network, cp_id: str) -> list[str]:
    rows = net.audit(action="message.rejected", cp=cp_id)
    return sorted(str(r.get("params", {}).get("kind")) for r in rows)


def keys(net: Network) -> dict[str, CpKey]:
    assert net.db_path is not None
    return held_keys(net.workdir, net.db_path)


def opened(key: CpKey, topic_base: str, value: bytes) -> Event | None:
    """The event in a record sealed with `key`, or None if it is not (the test's own reader)."""
    codec = CpTopicCodec(KeyRing())
    codec.ring.install(key)
    try:
        return codec.open(topic_base, value)[0]
    except (RecordRejected, BadEvent):  # a record this key does not open: "not this one"
        return None


def a_reading(cp_id: str, energy: str = "1.0") -> CpTelemetry:
    return CpTelemetry(
        cp_id=cp_id,
        session_id=uuid4(),
        driver_id="D001",
        seq=1,
        kw=Decimal(22),
        energy_kwh=Decimal(energy),
        amount_eur=Decimal("0.35"),
    )


def test_a_capture_shows_nothing_in_clear_and_forged_altered_replayed_records_change_nothing(
    network: Network,
) -> None:
    net = network
    central = net.central()
    net.charging_point("ALC01", "--auto-plug", "--supply-seconds", "3")
    net.charging_point("VLC01", "--auto-plug", "--supply-seconds", "3")
    driver = net.driver("D001", "--cp", "ALC01")
    driver.wait_for("TICKET driver=D001 cp=ALC01", timeout=40)

    captured = read_topic(net.kafka, CP_EVENTS) + read_topic(net.kafka, CP_COMMANDS)
    assert len(captured) >= 4, "a supply writes authorisation, start, readings and end"
    for record in captured:
        assert record.value.startswith(b"EVS"), "a plain record on a CP topic"
        for word in IN_CLEAR:
            assert word not in record.value, f"{word!r} in clear on {record.topic}"

    held = keys(net)
    alc, vlc = held["ALC01"], held["VLC01"]
    assert alc.secret.hex() not in central.output()
    assert b64(alc.secret) not in central.output()
    readings = [
        r
        for r in captured
        if r.topic == CP_EVENTS.name and isinstance(opened(alc, "cp-events", r.value), CpTelemetry)
    ]
    assert readings, "no reading of ALC01 found in the capture"
    original = readings[-1].value
    flipped = bytearray(original)
    flipped[-20] ^= 0x01
    forged = sealed_with(a_reading("ALC01", "50.0"), CpKey("ALC01", alc.version, vlc.secret))
    sessions = net.sessions(cp_id="ALC01")
    balance = net.balance("D001")

    produce(
        net.kafka,
        [
            (CP_EVENTS, "ALC01", forged),  # CP A's reading sealed with CP B's key
            (CP_EVENTS, "ALC01", bytes(flipped)),  # a real record with one bit changed
            (CP_EVENTS, "ALC01", original),  # a real record sent again
            (CP_EVENTS, "ALC01", a_reading("ALC01").to_bytes()),  # plain JSON
        ],
    )
    wait_until(
        lambda: rejected_kinds(net, "ALC01") == ["forged", "forged", "not_sealed", "replayed"],
        20,
        what=f"audit rows: {rejected_kinds(net, 'ALC01')}\n{central.output()[-3000:]}",
    )
    assert net.sessions(cp_id="ALC01") == sessions
    assert net.balance("D001") == balance
    assert net.cp("ALC01")["state"] == "Activado"
    assert central.alive
    assert central.output().count("dropped: authentication failed") == 1  # once per kind

    again = net.driver("D002", "--cp", "ALC01")
    again.wait_for("TICKET driver=D002 cp=ALC01", timeout=40)


def test_revoking_keys_mid_supply_bills_stops_and_refuses_the_old_key_until_reauth(
    network: Network,
) -> None:
    net = network
    central = net.central()
    engine, monitor = net.charging_point("ALC01", "--auto-plug", "--supply-seconds", "120")
    old = keys(net)["ALC01"]
    driver = net.driver("D001", "--cp", "ALC01")
    driver.wait_for("PROGRESS driver=D001 cp=ALC01", timeout=30)
    wait_until(
        lambda: Decimal(net.cp("ALC01").get("energy_kwh") or "0") > 0,
        20,
        what="a reading reached Central",
    )

    answer = net.admin("/api/cps/ALC01/revoke-keys")
    assert answer.status_code == 200, answer.text
    driver.wait_for("TICKET driver=D001 cp=ALC01", timeout=30)
    (session,) = net.sessions(cp_id="ALC01")
    assert session["end_reason"] == "keys_revoked"
    assert Decimal(session["energy_kwh"]) > 0
    view = net.wait_state("ALC01", "Parado")
    assert "keys revoked" in json.dumps(view)
    assert "ALC01" not in keys(net)
    engine.wait_for("keys revoked", timeout=20)
    monitor.wait_for("revoked", timeout=20)
    (row,) = net.audit(action="key.revoked", cp="ALC01")
    assert row["actor"] == "admin"
    assert row["ip"] == "127.0.0.1"

    produce(net.kafka, [(CP_EVENTS, "ALC01", sealed_with(a_reading("ALC01"), old))])
    wait_until(
        lambda: "old_key" in rejected_kinds(net, "ALC01"),
        20,
        what=f"audit: {rejected_kinds(net, 'ALC01')}",
    )
    assert net.sessions(cp_id="ALC01") == [session]
    assert net.cp("ALC01")["state"] == "Parado"
    assert net.admin("/api/cps/ALC01/revoke-keys").status_code == 409

    monitor.send("A")  # the Monitor's "authenticate again"
    net.wait_state("ALC01", "Activado", timeout=30)
    new = keys(net)["ALC01"]
    assert new.version > old.version
    assert new.secret != old.secret
    wait_until(lambda: net.audit(action="key.issued", cp="ALC01")[0]["detail"], 10)
    second = net.driver("D002", "--cp", "ALC01")
    second.wait_for("PROGRESS driver=D002 cp=ALC01", timeout=30)
    second.send("s")
    second.wait_for("TICKET driver=D002 cp=ALC01", timeout=30)
    assert central.alive


def test_a_restarted_central_keeps_the_keys_and_the_engine_goes_on_without_reauth(
    network: Network,
) -> None:
    net = network
    central = net.central()
    engine, _ = net.charging_point("ALC01", "--auto-plug", "--supply-seconds", "10")
    before = keys(net)["ALC01"]
    driver = net.driver("D001", "--cp", "ALC01")
    driver.wait_for("PROGRESS driver=D001 cp=ALC01", timeout=30)

    central.stop_by(signal.SIGKILL)
    sent = len(read_topic(net.kafka, CP_EVENTS))
    wait_until(  # the Engine goes on: readings sealed with the key it has, while Central is away
        lambda: len(read_topic(net.kafka, CP_EVENTS)) >= sent + 2, 20, what="readings"
    )
    restarted = net.central()
    assert "ALC01" in keys(net)
    driver.wait_for("TICKET driver=D001 cp=ALC01", timeout=60)
    (session,) = net.sessions(cp_id="ALC01")
    assert session["end_reason"] == "unplugged"
    assert Decimal(session["energy_kwh"]) > 0
    assert rejected_kinds(net, "ALC01") == []  # every record read back after the restart opened
    assert engine.alive
    db = (net.db_path.read_bytes() if net.db_path else b"") + (
        net.workdir.joinpath("central.db-wal").read_bytes()
        if net.workdir.joinpath("central.db-wal").exists()
        else b""
    )
    for key in (before, keys(net)["ALC01"]):
        assert key.secret not in db
        assert b64(key.secret).encode() not in db
    assert b64(before.secret) not in restarted.output()
    events = [
        parse_event(r.value)
        for r in read_topic(net.kafka, CP_EVENTS)
        if r.value and r.value[:1] == b"{"
    ]
    assert events == []  # nothing on cp-events was ever plain
