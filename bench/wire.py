"""The bytes the load generator sends, built cheaply and checked against the real contracts.

A pydantic model per message would cost the generator more CPU than Central spends handling it,
and on a 2-core machine the generator competes with Central. So the Engine's events are written
from string templates here, and `check_against_contracts()` proves at start-up that every
template parses with `evcharging.contracts.events.parse_event` into the right model with the
right values. Ids are restricted to `[A-Za-z0-9_.:-]` by the contract, so they need no escaping.
The socket frames come from the real codec (`evcharging.contracts.frames.encode`).

With a CP key (issue 14), those bytes are sealed as they are (`Sealer`: the layout of
`evcharging.contracts.sealed`, the header and AAD prefixes computed once per CP key), rather than
through `cp_keys.seal`, which serialises a model first; `check_against_contracts()` proves that
Central's `CpTopicCodec` opens what `Sealer` seals.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from evcharging.contracts.events import (
    AuthorizationRequest,
    CpTelemetry,
    SupplyEnded,
    SupplyStarted,
    parse_event,
)
from evcharging.contracts.frames import encode
from evcharging.contracts.sealed import AAD_LABEL, FORMAT, MAGIC, SealedHeader, associated_data
from evcharging.contracts.socket_ops import EngineState, Opcode
from evcharging.contracts.topics import CP_EVENTS
from evcharging.domain.money import cost
from evcharging.services.cp_keys import CpKey, CpTopicCodec, KeyRing, Sender, new_key

ENGINE_KW = "22"  # the Engine's default --kw
WH_PER_TICK = 367  # 22 kW for one second at the Engine's default speedup 60: 22 * 60 / 3600 kWh


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def kwh_text(wh: int) -> str:
    """Watt-hours -> the contract's decimal kWh string ("12.345"); exact, no float."""
    return f"{wh // 1000}.{wh % 1000:03d}"


def amount_text(wh: int, price: Decimal) -> str:
    return str(cost(Decimal(wh) / 1000, price))


def _envelope(event_type: str, ts: str, source: str) -> str:
    return (
        f'{{"event_id":"{uuid.uuid4()}","event_type":"{event_type}","ts":"{ts}",'
        f'"source":"{source}","v":1,'
    )


def telemetry(
    cp_id: str, session_id: str, driver_id: str, seq: int, wh: int, amount: str, ts: str
) -> bytes:
    head = _envelope("CP_TELEMETRY", ts, f"EV_CP_E/{cp_id}")
    return (
        f'{head}"cp_id":"{cp_id}","session_id":"{session_id}","driver_id":"{driver_id}",'
        f'"seq":{seq},"kw":"{ENGINE_KW}","energy_kwh":"{kwh_text(wh)}","amount_eur":"{amount}"}}'
    ).encode()


def supply_started(cp_id: str, session_id: str, driver_id: str, ts: str) -> bytes:
    head = _envelope("SUPPLY_STARTED", ts, f"EV_CP_E/{cp_id}")
    return (
        f'{head}"cp_id":"{cp_id}","session_id":"{session_id}","driver_id":"{driver_id}"}}'
    ).encode()


def supply_ended(
    cp_id: str, session_id: str, driver_id: str, wh: int, reason: str, ts: str
) -> bytes:
    head = _envelope("SUPPLY_ENDED", ts, f"EV_CP_E/{cp_id}")
    return (
        f'{head}"cp_id":"{cp_id}","session_id":"{session_id}","driver_id":"{driver_id}",'
        f'"energy_kwh":"{kwh_text(wh)}","reason":"{reason}"}}'
    ).encode()


def authorization_request(driver_id: str, cp_id: str, request_id: str, ts: str) -> bytes:
    head = _envelope("AUTHORIZATION_REQUEST", ts, f"driver:{driver_id}")
    return (
        f'{head}"request_id":"{request_id}","driver_id":"{driver_id}","cp_id":"{cp_id}",'
        f'"origin":"driver"}}'
    ).encode()


def heartbeat(cp_id: str, engine_ok: bool) -> bytes:
    return encode(Opcode.HB, cp_id, EngineState.OK if engine_ok else EngineState.KO)


def auth_frame(cp_id: str, client_nonce: str, exchange: str) -> bytes:
    """The first frame of the SCRAM exchange (docs/socket-protocol.md): Engine OK, our nonce,
    our ephemeral X25519 key (`cp_keys.Exchange().public`) for the key grant."""
    return encode(Opcode.AUTH, cp_id, EngineState.OK, "", client_nonce, exchange)


def proof_frame(cp_id: str, proof: str) -> bytes:
    return encode(Opcode.PROOF, cp_id, proof)


_VERSION = struct.Struct(
    ">3sBI"
)  # the start of `contracts.sealed`'s header: magic, format, version


@dataclass(frozen=True, slots=True)
class Sealer:
    """One CP key sealing pre-serialised JSON for one topic, as `cp_keys.seal` would: the
    header is `head + nonce + tail`, the associated data `aad_head + header`."""

    aead: AESGCM
    head: bytes  # magic, format, key version
    tail: bytes  # CP id length, CP id
    aad_head: bytes  # label | topic |

    @classmethod
    def of(cls, key: CpKey, topic_base: str = CP_EVENTS.base) -> Sealer:
        cp = key.cp_id.encode("utf-8")
        return cls(
            key.aead,
            _VERSION.pack(MAGIC, FORMAT, key.version),
            bytes((len(cp),)) + cp,
            associated_data(topic_base, b""),
        )

    def seal(self, nonce: bytes, plain: bytes) -> bytes:
        header = self.head + nonce + self.tail
        return header + self.aead.encrypt(nonce, plain, self.aad_head + header)


class TemplateMismatch(RuntimeError):
    """A template of this module no longer produces the event the contracts describe."""


def _expect(ok: bool, what: object) -> None:
    if not ok:
        raise TemplateMismatch(f"bench.wire template out of date with the contracts: {what!r}")


def check_against_contracts() -> None:
    """Fail loudly if a template no longer matches the event contracts."""
    sid, ts, price = str(uuid.uuid4()), now_iso(), Decimal("0.35")
    tel = parse_event(telemetry("CP1", sid, "D1", 3, 1100, amount_text(1100, price), ts))
    _expect(isinstance(tel, CpTelemetry), tel)
    assert isinstance(tel, CpTelemetry)
    _expect((tel.energy_kwh, tel.amount_eur, tel.seq) == (Decimal("1.1"), Decimal("0.39"), 3), tel)
    started = parse_event(supply_started("CP1", sid, "D1", ts))
    _expect(isinstance(started, SupplyStarted) and str(started.session_id) == sid, started)
    ended = parse_event(supply_ended("CP1", sid, "D1", 2005, "unplugged", ts))
    _expect(isinstance(ended, SupplyEnded) and ended.energy_kwh == Decimal("2.005"), ended)
    request = parse_event(authorization_request("D1", "CP1", sid, ts))
    _expect(isinstance(request, AuthorizationRequest) and request.cp_id == "CP1", request)
    _check_sealer(telemetry("CP1", sid, "D1", 3, 1100, amount_text(1100, price), ts))


def _check_sealer(plain: bytes) -> None:
    """What `Sealer` seals, Central's codec opens, and its header is the contract's."""
    key, sender = new_key("CP1", 7), Sender()
    nonce = sender.next_nonce()
    value = Sealer.of(key).seal(nonce, plain)
    _expect(value.startswith(SealedHeader("CP1", 7, nonce).to_bytes()), value[:40])
    _expect(associated_data(CP_EVENTS.base, b"").startswith(AAD_LABEL), AAD_LABEL)
    ring = KeyRing()
    ring.install(key)
    event = CpTopicCodec(ring).decode(CP_EVENTS.base, value, record_key=b"CP1")
    _expect(event == parse_event(plain), event)
