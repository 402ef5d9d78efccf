"""The bench's side of issue 14: the load generator speaks the keyed protocol (AUTH with an
exchange key, the AUTH_OK grant, sealed cp-events, opened cp-commands), mirrors Central's
`--cp-encryption off`, and the side-by-side figures (verdicts, ratios, report) are right."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from bench import encryption, harness, report_encryption, seal, wire
from bench.__main__ import parse_args
from bench.loadgen import CpSpec, LoadConfig, LoadGenerator, granted_key
from bench.scale import cpu_per_message
from bench.stats import LagSample

from evcharging.contracts.events import CpTelemetry, StopSupply, SupplyAuthorised, SupplyStarted
from evcharging.contracts.frames import ACK, FrameDecoder, encode
from evcharging.contracts.sealed import RejectKind
from evcharging.contracts.socket_ops import Opcode
from evcharging.contracts.topics import CP_COMMANDS, CP_EVENTS
from evcharging.services.cp_auth import Challenge, Prover, b64, make_verifier, new_nonce
from evcharging.services.cp_keys import (
    CpKey,
    CpTopicCodec,
    Exchange,
    GrantError,
    KeyRing,
    RecordRejected,
    Sender,
    grant_key,
    new_key,
)
from evcharging.services.cp_keys import seal as seal_event

SECRET = "bench-test-secret"
VERIFIER = make_verifier(SECRET, n=16)  # a cheap stretch: what is tested is the exchange


def receiver(*keys: CpKey) -> CpTopicCodec:
    ring = KeyRing()
    for key in keys:
        ring.install(key)
    return CpTopicCodec(ring)


# --- sealing pre-serialised JSON ---------------------------------------------------------------


def test_the_loadgen_sealer_writes_records_centrals_codec_opens() -> None:
    key = new_key("SC00001", 3)
    plain = wire.telemetry(
        "SC00001", str(uuid.uuid4()), "DSC00001", 4, 1468, "0.51", wire.now_iso()
    )
    sender, sealer, central = Sender(), wire.Sealer.of(key), receiver(key)
    values = [sealer.seal(sender.next_nonce(), plain) for _ in range(3)]
    assert b"SC00001" in values[0]
    assert b"DSC00001" not in values[0]
    opened = [central.decode(CP_EVENTS.base, v, record_key=b"SC00001") for v in values]
    assert all(isinstance(e, CpTelemetry) and e.energy_kwh == Decimal("1.468") for e in opened)
    with pytest.raises(RecordRejected) as replayed:
        central.decode(CP_EVENTS.base, values[1], record_key=b"SC00001")
    assert replayed.value.kind is RejectKind.REPLAYED
    flipped = bytearray(values[2])
    flipped[-1] ^= 1
    with pytest.raises(RecordRejected) as forged:
        receiver(key).decode(CP_EVENTS.base, bytes(flipped), record_key=b"SC00001")
    assert forged.value.kind is RejectKind.FORGED


def test_the_start_up_check_covers_the_sealer() -> None:
    wire.check_against_contracts()  # raises TemplateMismatch if Sealer's layout drifts


# --- the AUTH_OK grant -------------------------------------------------------------------------


def _exchange(cp_id: str = "SC00001") -> tuple[Exchange, Challenge, bytes, Any, str]:
    exchange, client_nonce = Exchange(), new_nonce()
    challenge = Challenge.start(cp_id, client_nonce, VERIFIER, exchange.public)
    kdf = VERIFIER.kdf
    proof, message, keys = Prover(cp_id, SECRET).answer(
        client_nonce, b64(kdf.salt), str(kdf.n), str(kdf.r), str(kdf.p), challenge.nonce,
        exchange.public,
    )  # fmt: skip
    return exchange, challenge, message, keys, proof


def test_with_encryption_the_auth_ok_grant_gives_the_cps_key() -> None:
    exchange, challenge, message, keys, proof = _exchange()
    key = new_key("SC00001", 5)
    grant = grant_key(
        key,
        auth_message=challenge.message,
        client_key=challenge.client_key(proof) or b"",
        server_key=VERIFIER.server_key,
        monitor_public=exchange.public,
    )
    fields = ("SC00001", *grant.fields())
    assert granted_key("SC00001", fields, exchange, message, keys, True) == key
    with pytest.raises(GrantError, match="encryption off"):  # the modes must agree
        granted_key("SC00001", fields, exchange, message, keys, False)
    with pytest.raises(GrantError):  # another CP's answer
        granted_key("SC00002", fields, exchange, message, keys, True)


def test_encryption_off_takes_issue_13s_auth_ok_and_checks_its_signature() -> None:
    exchange, challenge, message, keys, proof = _exchange()
    signature = challenge.check(proof)
    assert signature is not None
    fields = ("SC00001", b64(signature))
    assert granted_key("SC00001", fields, exchange, message, keys, False) is None
    with pytest.raises(GrantError, match="without a key"):
        granted_key("SC00001", fields, exchange, message, keys, True)
    with pytest.raises(GrantError, match="signature"):
        granted_key("SC00001", ("SC00001", b64(bytes(32))), exchange, message, keys, False)


class FakeCentral(asyncio.Protocol):
    """Central's side of AUTH/PROOF as the protocol of issue 14 says (or issue 13's AUTH_OK when
    `encryption` is off); records what it was sent and the key it granted."""

    def __init__(self, encryption: bool) -> None:
        self.encryption = encryption
        self.decoder = FrameDecoder()
        self.auth_fields: tuple[str, ...] = ()
        self.granted: CpKey | None = None
        self.challenge: Challenge | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for frame in self.decoder.feed(data.lstrip(bytes((ACK,)))):
            assert not isinstance(frame, Exception)
            assert self.transport is not None
            self.transport.write(bytes((ACK,)) + self.answer(frame.opcode, frame.fields))

    def answer(self, opcode: str, fields: tuple[str, ...]) -> bytes:
        if opcode == Opcode.AUTH:
            self.auth_fields = fields
            cp_id, _, _, client_nonce, exchange = fields
            self.challenge = Challenge.start(cp_id, client_nonce, VERIFIER, exchange)
            kdf = VERIFIER.kdf
            return encode(
                Opcode.CHALLENGE,
                b64(kdf.salt),
                str(kdf.n),
                str(kdf.r),
                str(kdf.p),
                self.challenge.nonce,
            )
        assert opcode == Opcode.PROOF
        assert self.challenge is not None
        client_key = self.challenge.client_key(fields[1])
        assert client_key is not None, "the load generator's proof is wrong"
        cp_id = fields[0]
        if not self.encryption:
            signature = self.challenge.check(fields[1])
            assert signature is not None
            return encode(Opcode.AUTH_OK, cp_id, b64(signature))
        self.granted = new_key(cp_id, 1)
        grant = grant_key(
            self.granted,
            auth_message=self.challenge.message,
            client_key=client_key,
            server_key=VERIFIER.server_key,
            monitor_public=self.challenge.exchange,
        )
        return encode(Opcode.AUTH_OK, cp_id, *grant.fields())


SPEC = CpSpec(0, "SC00000", "DSC00000", "Bench site 0", "0.35")


async def _connected(encryption: bool) -> tuple[LoadGenerator, FakeCentral, list[bytes]]:
    central = FakeCentral(encryption)
    server = await asyncio.get_running_loop().create_server(lambda: central, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = LoadConfig("unused:9092", "127.0.0.1", port, secret=SECRET, encryption=encryption)
    gen = LoadGenerator(cfg, [SPEC])
    sent: list[bytes] = []

    async def record(topic: str, key: bytes, value: bytes, partition: int | None) -> None:
        assert topic == CP_EVENTS.name
        assert key == SPEC.cp_id.encode()
        sent.append(value)

    gen._send = record  # type: ignore[method-assign]  # no broker: what would be produced
    try:
        result = await gen.connect(within=10)
    finally:
        for sim in gen.sims:
            if sim.link is not None:
                sim.link.close()
        server.close()
    assert result["connected"] == 1, result
    return gen, central, sent


async def test_the_load_generator_authenticates_with_an_exchange_key_and_holds_the_grant() -> None:
    gen, central, sent = await _connected(encryption=True)
    assert len(central.auth_fields) == 5
    assert central.auth_fields[4]
    assert gen.codec.ring.current(SPEC.cp_id) == central.granted
    assert central.granted is not None
    authorised = SupplyAuthorised(
        cp_id=SPEC.cp_id,
        session_id=uuid.uuid4(),
        driver_id=SPEC.driver_id,
        price_eur_per_kwh=Decimal("0.35"),
    )
    value = seal_event(authorised, central.granted, Sender())
    await gen._on_command(SPEC.cp_id.encode(), value, 0, 7)  # opened, then the Engine starts
    assert gen.commands["SUPPLY_AUTHORISED"] == 1
    assert gen.sims[0].supplying
    started = receiver(central.granted).decode(CP_EVENTS.base, sent[0], record_key=b"SC00000")
    assert isinstance(started, SupplyStarted)
    assert started.session_id == authorised.session_id
    forged = seal_event(
        StopSupply(cp_id=SPEC.cp_id, session_id=authorised.session_id, reason="cp_fault"),
        new_key(SPEC.cp_id, 1),  # not the CP's key
        Sender(),
    )
    await gen._on_command(SPEC.cp_id.encode(), forged, 0, 8)
    assert gen.commands_rejected == {"forged": 1}
    assert gen.sims[0].supplying
    assert gen.figures()["commands_rejected"] == {"forged": 1}


async def test_with_encryption_off_the_load_generator_sends_and_reads_plain_json() -> None:
    gen, central, sent = await _connected(encryption=False)
    assert central.granted is None
    assert gen.codec.ring.cp_ids() == []
    authorised = SupplyAuthorised(
        cp_id=SPEC.cp_id,
        session_id=uuid.uuid4(),
        driver_id=SPEC.driver_id,
        price_eur_per_kwh=Decimal("0.35"),
    )
    await gen._on_command(SPEC.cp_id.encode(), authorised.to_bytes(), 0, 1)
    assert gen.sims[0].supplying
    assert sent[0].startswith(b"{")
    assert CpTopicCodec(KeyRing(), encrypt=False).decode(CP_COMMANDS.base, sent[0]) is not None


# --- Central's command line and the CLI ---------------------------------------------------------


def test_central_is_started_with_cp_encryption_off_only_for_the_comparison() -> None:
    args = ("k:9092", Path("c.db"), Path("seed.yaml"), "g", (1, 2))
    assert "--cp-encryption" not in harness.central_argv(*args)
    off = harness.central_argv(*args, encryption=False, audit=Path("run-audit.jsonl"))
    assert off[off.index("--cp-encryption") + 1] == "off"
    assert off[off.index("--audit-file") + 1] == "run-audit.jsonl"  # its dropped records


def test_the_encryption_switch_per_command() -> None:
    assert parse_args(["scale"]).encryption == "on"
    assert parse_args(["auth", "--encryption", "off"]).encryption == "off"
    assert parse_args(["holds"]).encryption == "both"
    assert parse_args(["encryption"]).encryption == "both"
    assert parse_args(["auth", "--encryption", "both"]).encryption == "both"
    for wrong in (["scale", "--encryption", "both"], ["encryption", "--encryption", "on"]):
        with pytest.raises(SystemExit) as exited:
            parse_args(wrong)
        assert exited.value.code == 2


# --- verdicts and ratios ------------------------------------------------------------------------


def run(n: int, mode: str, holds: bool, cpu: float | None = None) -> dict[str, Any]:
    return {"n": n, "mode": mode, "holds": holds, "central_cpu_us_per_message": cpu}


def test_alternation_runs_the_modes_in_turn_neither_always_first() -> None:
    assert encryption.alternation(("on", "off"), 3) == [
        (1, "on"),
        (1, "off"),
        (2, "off"),
        (2, "on"),
        (3, "on"),
        (3, "off"),
    ]


def test_an_n_holds_only_after_three_consecutive_runs_that_hold() -> None:
    runs = [run(3000, "on", True)] * 3 + [run(5000, "on", True), run(5000, "on", False)]
    runs += [run(3000, "off", True), run(3000, "off", False), run(3000, "off", True)]
    on = encryption.verdict(runs, "on", (3000, 5000), 3)
    assert on["largest_n"] == 3000
    assert not on["every_n_held"]
    assert on["per_n"]["5000"] == {"runs": 2, "held": 1, "holds": False}
    off = encryption.verdict(runs, "off", (3000, 5000), 3)
    assert off["largest_n"] is None  # one lucky run is not enough
    # a larger N that holds does not count above a smaller one that failed
    runs = [run(2000, "on", False)] + [run(3000, "on", True)] * 3
    assert encryption.verdict(runs, "on", (2000, 3000), 3)["largest_n"] is None


def test_the_comparison_gives_each_ratio_and_its_budget() -> None:
    runs = [run(3000, m, True, c) for m, c in (("on", 52.0), ("off", 50.0))] * 3
    runs += [run(5000, "on", True, 60.0), run(5000, "off", True, 50.0)] * 3
    holds = {"results": encryption.holds_results(runs, ("on", "off"), (3000, 5000), 3)}
    pooled = {"on": {"p99_ms": 13.2}, "off": {"p99_ms": 12.0}}
    figures = {f.what: f for f in encryption.comparison({"results": {"pooled": pooled}}, holds)}
    cpu = figures["Central's CPU per message"]
    assert (cpu.on, cpu.off, cpu.ratio, cpu.cost, cpu.within_budget) == (
        60.0,
        50.0,
        1.2,
        0.2,
        False,
    )
    p99 = figures["authorisation p99"]
    assert (p99.ratio, p99.within_budget) == (1.1, True)
    n = figures["largest N that holds"]
    assert (n.on, n.off, n.cost, n.within_budget) == (5000, 5000, 0.0, True)
    assert "a floor" in n.note  # every N asked for held: the true limit is higher


def test_cpu_per_message_is_centrals_cpu_over_the_records_it_committed() -> None:
    samples = [LagSample(0.0, {}, {"a": 100, "b": 50}), LagSample(30.0, {}, {"a": 2600, "b": 550})]
    figures = cpu_per_message(samples, [(0.0, 10.0), (30.0, 10.6)])
    assert figures["messages_handled"] == 3000
    assert figures["central_cpu_us_per_message"] == 200.0


# --- the micro-benchmark and the report ---------------------------------------------------------


def test_the_micro_benchmark_and_the_encryption_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    result = seal.run(seal.SealParams(messages=300))
    assert set(result["paths"]) == {"aesgcm", "codec", "plain", "loadgen"}
    assert result["paths"]["codec"]["both"]["n"] == 300
    assert result["sealed_bytes"] > result["plaintext_bytes"]
    runs = [run(50, m, True, 40.0) for m in ("on", "off")] * 3
    holds = encryption.holds_results(runs, ("on", "off"), (50,), 3)
    harness.write_result(encryption.HOLDS_FILE, {"sizes": [50], "steady_s": 8.0}, holds)
    text = "\n".join(report_encryption.section())
    assert "| Central's CPU per message | 40.0 µs | 40.0 µs | 1.00 |" in text
    assert "Encryption on: **N = 50**" in text
    assert "bare AES-256-GCM" in text
    assert "Central's share" in text
    assert "python -m bench auth --encryption both" in text  # not measured yet: how to
