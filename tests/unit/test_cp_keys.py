"""Per-CP keys: sealing, the receiver's checks, rotation, the handovers and keys at rest."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evcharging.contracts.events import CpStop, CpTelemetry, DriverNotice, SupplyEnded
from evcharging.contracts.sealed import RejectKind, SealedHeader, split
from evcharging.services.cp_auth import (
    Challenge,
    Prover,
    b64,
    make_verifier,
    new_nonce,
    new_secret,
)
from evcharging.services.cp_keys import (
    CpKey,
    CpTopicCodec,
    Exchange,
    GrantError,
    KeyGrant,
    KeyRing,
    KeyUnavailable,
    MasterKey,
    RecordRejected,
    ReplayGuard,
    grant_key,
    handover_unwrap,
    handover_wrap,
    new_key,
    open_grant,
)


def telemetry(cp_id: str = "CP1", seq: int = 1) -> CpTelemetry:
    return CpTelemetry(
        cp_id=cp_id,
        session_id=uuid4(),
        driver_id="D7",
        seq=seq,
        kw=Decimal("11"),
        energy_kwh=Decimal("1.234"),
        amount_eur=Decimal("0.43"),
    )


def pair(*keys: CpKey) -> tuple[CpTopicCodec, CpTopicCodec]:
    """A sender (an Engine) and a receiver (Central) holding the same keys."""
    sender, receiver = CpTopicCodec(KeyRing()), CpTopicCodec(KeyRing())
    for key in keys:
        sender.ring.install(key)
        receiver.ring.install(key)
    return sender, receiver


def rejected(codec: CpTopicCodec, topic: str, value: bytes, **kw: object) -> RejectKind:
    with pytest.raises(RecordRejected) as caught:
        codec.decode(topic, value, **kw)  # type: ignore[arg-type]
    return caught.value.kind


def test_a_sealed_record_opens_and_shows_nothing_in_clear() -> None:
    sender, receiver = pair(new_key("CP1", 1))
    event = telemetry()
    value = sender.encode(event)
    for clear in (b"D7", b"1.234", b"CP_TELEMETRY", b"0.43", str(event.session_id).encode()):
        assert clear not in value
    assert receiver.decode("cp-events", value, record_key=b"CP1", offset=0) == event


def test_commands_are_sealed_too_and_other_topics_stay_plain() -> None:
    central, engine = pair(new_key("CP1", 1))
    command = CpStop(cp_id="CP1")
    value = central.encode(command)
    assert b"CP_STOP" not in value
    assert engine.decode("cp-commands", value) == command
    notice = SupplyEnded(
        cp_id="CP1", session_id=uuid4(), driver_id="D7", energy_kwh=Decimal(1), reason="unplugged"
    )
    assert b"SUPPLY_ENDED" not in central.encode(notice)


def test_another_cps_key_a_flipped_byte_and_a_moved_record_fail() -> None:
    a, b = new_key("A", 1), new_key("B", 1)
    _, central = pair(a, b)
    forger = CpTopicCodec(KeyRing())
    forger.ring.install(CpKey("A", 1, b.secret))  # B's key, labelled as A's
    assert rejected(central, "cp-events", forger.encode(telemetry("A"))) is RejectKind.FORGED
    engine_a, _ = pair(a)
    good = bytearray(engine_a.encode(telemetry("A")))
    good[-5] ^= 0x01
    assert rejected(central, "cp-events", bytes(good)) is RejectKind.FORGED
    moved = engine_a.encode(telemetry("A"))
    assert rejected(central, "cp-commands", moved) is RejectKind.FORGED  # another topic
    assert rejected(central, "cp-events", moved, record_key=b"B") is RejectKind.MISROUTED


def test_a_replayed_record_is_refused_but_a_redelivery_is_skipped_quietly() -> None:
    engine, central = pair(new_key("CP1", 1))
    value = engine.encode(telemetry())
    assert central.decode("cp-events", value, partition=3, offset=10) is not None
    assert central.decode("cp-events", value, partition=3, offset=10) is None  # Kafka again
    kind = rejected(central, "cp-events", value, partition=3, offset=11)  # copied, re-sent
    assert kind is RejectKind.REPLAYED


def test_plain_json_on_a_sealed_topic_is_refused() -> None:
    _, central = pair(new_key("CP1", 1))
    kind = rejected(central, "cp-events", telemetry().to_bytes(), record_key=b"CP1")
    assert kind is RejectKind.NOT_SEALED


def test_rotation_keeps_the_old_key_until_the_new_one_is_used() -> None:
    k1, k2 = new_key("CP1", 1), new_key("CP1", 2)
    engine, central = pair(k1)
    late = engine.encode(telemetry(seq=1))  # sealed with v1 before the Engine got v2
    central.ring.install(k2)
    assert central.decode("cp-events", late) is not None  # v1 still accepted
    engine.ring.install(k2)
    assert central.decode("cp-events", engine.encode(telemetry(seq=2))) is not None
    assert central.ring.versions("CP1") == [2]  # v2 used: v1 retired
    old = CpTopicCodec(KeyRing())
    old.ring.install(k1)
    assert rejected(central, "cp-events", old.encode(telemetry(seq=3))) is RejectKind.OLD_KEY


def test_revocation_refuses_the_old_key_and_a_sender_without_a_key_waits() -> None:
    engine, central = pair(new_key("CP1", 1))
    assert central.revoked("CP1") == [1]
    assert rejected(central, "cp-events", engine.encode(telemetry())) is RejectKind.OLD_KEY
    engine.revoked("CP1")
    with pytest.raises(KeyUnavailable):
        engine.encode(telemetry())

    async def wait_then_install() -> CpKey:
        waiting = asyncio.create_task(engine.ring.wait_for("CP1"))
        await asyncio.sleep(0)
        assert not waiting.done()
        engine.ring.install(new_key("CP1", 2))
        return await waiting

    assert asyncio.run(wait_then_install()).version == 2


def test_a_version_never_issued_and_a_cp_without_keys_are_told_apart() -> None:
    _, central = pair(new_key("CP1", 1))
    stranger = CpTopicCodec(KeyRing())
    stranger.ring.install(new_key("CP1", 9))
    assert rejected(central, "cp-events", stranger.encode(telemetry())) is RejectKind.UNKNOWN_KEY
    stranger.ring.install(new_key("CP2", 1))
    assert rejected(central, "cp-events", stranger.encode(telemetry("CP2"))) is RejectKind.NO_KEY


@given(st.permutations(list(range(1, 60))))
def test_the_replay_window_takes_each_counter_once_in_any_order(order: list[int]) -> None:
    guard = ReplayGuard(window=64)
    epoch = b"E" * 8
    for counter in order:
        header = SealedHeader("CP1", 1, epoch + counter.to_bytes(4, "big"))
        assert guard.fresh(header)
        assert not guard.fresh(header)


def test_an_engine_restart_is_a_new_epoch() -> None:
    key = new_key("CP1", 1)
    first, central = pair(key)
    second = CpTopicCodec(KeyRing())
    second.ring.install(key)  # the same key, handed again after a restart: counters restart
    for engine in (first, second):
        value = engine.encode(telemetry())
        assert split(value)[0].counter == 1
        assert central.decode("cp-events", value) is not None


def scram(cp_id: str = "CP1") -> tuple[Challenge, str, bytes, Exchange, Prover]:
    secret = new_secret()
    verifier = make_verifier(secret, n=2**4)
    prover, monitor = Prover(cp_id, secret), Exchange()
    client_nonce = new_nonce()
    challenge = Challenge.start(cp_id, client_nonce, verifier, monitor.public)
    kdf = verifier.kdf
    proof, message, _ = prover.answer(
        client_nonce,
        b64(kdf.salt),
        str(kdf.n),
        str(kdf.r),
        str(kdf.p),
        challenge.nonce,
        monitor.public,
    )
    assert message == challenge.message
    return challenge, proof, message, monitor, prover


def test_a_key_granted_at_auth_opens_only_for_that_exchange() -> None:
    challenge, proof, message, monitor, prover = scram()
    client_key = challenge.client_key(proof)
    assert client_key is not None
    key = new_key("CP1", 3)
    grant = grant_key(
        key,
        auth_message=challenge.message,
        client_key=client_key,
        server_key=challenge.verifier.server_key,
        monitor_public=monitor.public,
    )
    assert key.secret.hex() not in repr(grant)
    assert str(key.secret) not in repr(grant)
    keys = prover.keys(challenge.verifier.kdf)
    mine = dict(auth_message=message, keys=keys)
    assert open_grant("CP1", grant, exchange=monitor, **mine) == key
    with pytest.raises(GrantError):  # a man in the middle with his own exchange key
        open_grant("CP1", grant, exchange=Exchange(), **mine)
    swapped = KeyGrant(grant.signature, grant.version, Exchange().public, grant.wrapped)
    with pytest.raises(GrantError):
        open_grant("CP1", swapped, exchange=monitor, **mine)
    older = KeyGrant(grant.signature, "2", grant.central_public, grant.wrapped)
    with pytest.raises(GrantError):
        open_grant("CP1", older, exchange=monitor, **mine)


def test_a_wrong_proof_carries_no_client_key() -> None:
    challenge, proof, *_ = scram()
    assert challenge.client_key(proof[:-2] + ("A" if proof[-2] != "A" else "B") + proof[-1]) is None


def test_the_monitor_hands_the_key_to_its_engine_wrapped() -> None:
    key = new_key("CP1", 4)
    monitor, engine = Exchange(), Exchange()
    wrapped = handover_wrap(key, monitor, engine.public)
    assert handover_unwrap("CP1", 4, wrapped, engine, monitor.public) == key
    with pytest.raises(GrantError):
        handover_unwrap("CP1", 5, wrapped, engine, monitor.public)
    with pytest.raises(GrantError):
        handover_unwrap("CP1", 4, wrapped, Exchange(), monitor.public)


def test_keys_at_rest_open_only_under_their_master_key_and_row() -> None:
    master = MasterKey(MasterKey.generate())
    key = new_key("CP1", 2)
    row = master.seal_key(key)
    assert master.open_key("CP1", 2, row) == key
    assert repr(master) == "MasterKey(...)"
    assert repr(key) == "CpKey('CP1', v2)"
    for cp_id, version in (("CP2", 2), ("CP1", 3)):
        with pytest.raises(ValueError, match="does not open"):
            master.open_key(cp_id, version, row)
    with pytest.raises(ValueError, match="does not open"):
        MasterKey(MasterKey.generate()).open_key("CP1", 2, row)


def test_central_does_not_send_a_command_to_a_cp_without_a_key_an_engine_waits() -> None:
    central = CpTopicCodec(KeyRing(), hold_without_key=False)
    engine = CpTopicCodec(KeyRing())
    assert central.not_to_send(CpStop(cp_id="CP1"))
    assert not central.not_to_send(DriverNotice(driver_id="D1", message="plain topic"))
    assert not engine.not_to_send(CpStop(cp_id="CP1"))
    central.ring.install(new_key("CP1", 1))
    assert not central.not_to_send(CpStop(cp_id="CP1"))


def test_every_event_of_the_sealed_topics_is_keyed_by_its_cp_id() -> None:
    """The receiver checks `event.cp_id` against the header: every such event must have it."""
    from evcharging.contracts.events import EVENT_TYPES
    from evcharging.contracts.sealed import SEALED_TOPICS

    sealed = [cls for cls in EVENT_TYPES if cls.TOPIC.base in SEALED_TOPICS]
    assert sealed
    assert all(cls.KEY_FIELD == "cp_id" for cls in sealed)
