"""Load generator: N charging points against one EV_Central, without N Engine/Monitor processes.

Per CP one TCP connection speaking the real frame protocol (`AUTH`, then `HB#cp#OK` every
second, the CPs spread evenly over the second) and the Engine's real Kafka events
(`SUPPLY_STARTED` once Central's `SUPPLY_AUTHORISED` arrives on cp-commands, `CP_TELEMETRY`
every second with cumulative energy, `SUPPLY_ENDED` at the end), plus each driver's
`AUTHORIZATION_REQUEST` on driver-events.

Cheap by construction, since it shares two cores with Central and the broker:
- one asyncio loop; links are `asyncio.Protocol`s (no StreamReader, no task per link);
- one timing wheel of 100 slots of 10 ms drives every heartbeat and every reading;
- one producer that batches (`linger_ms`), one consumer reading all of cp-commands (a load
  generator, not a client: reading every CP's commands is fine here);
- the events come from checked string templates (`bench.wire`), not pydantic models.

Keys (issue 14): each AUTH carries an ephemeral X25519 key and AUTH_OK brings the CP's key
(`cp_keys.open_grant`); every record on cp-events is then sealed with it (`wire.Sealer`, one
`Sender` per simulated Engine, as each real Engine has its own) and every cp-commands record
opened by a `CpTopicCodec` holding all this generator's keys. With `encryption=False` it mirrors
`EV_Central --cp-encryption off`: AUTH_OK without a key (issue 13's), plain records both ways.

It runs in-process (`LoadGenerator`) or as worker processes driven over stdin/stdout
(`python -m bench.loadgen --spec FILE`, driven by `Workers`), so it can use the second core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import struct
import sys
import time
import uuid
from array import array
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import wire
from bench.stats import summary_ms
from evcharging.adapters.kafka.consumer import partition_for
from evcharging.apps.common import loop_factory
from evcharging.contracts.events import BadEvent, StopSupply, SupplyAuthorised
from evcharging.contracts.frames import ACK, NACK, Frame, FrameDecoder, FrameError, encode
from evcharging.contracts.socket_ops import Opcode
from evcharging.contracts.topics import CP_COMMANDS, CP_EVENTS, DRIVER_EVENTS
from evcharging.services.cp_auth import (
    ChallengeError,
    ClientKeys,
    KdfParams,
    Prover,
    new_nonce,
    signature_matches,
    unb64,
)
from evcharging.services.cp_keys import (
    CpKey,
    CpTopicCodec,
    Exchange,
    GrantError,
    KeyGrant,
    KeyRing,
    RecordRejected,
    Sender,
    open_grant,
)

log = logging.getLogger(__name__)

SLOTS = 100  # timing wheel: 100 slots ...
TICK_S = 0.01  # ... of 10 ms = one second per turn
_ACK = bytes((ACK,))
_NACK = bytes((NACK,))
_OK_FRAME = encode("OK")


class LinkDown(ConnectionError):
    """The CP's connection to Central is closed (by Central, or it never opened)."""


class SharedProver(Prover):
    """A Monitor's prover whose stretched keys are shared by every bench CP (they all have the
    same secret and salt, `harness.issue_credentials`): scrypt once per generator, not per CP."""

    def __init__(self, cp_id: str, secret: str, cache: dict[KdfParams, ClientKeys]) -> None:
        super().__init__(cp_id, secret)
        self._cache = cache

    def keys(self, kdf: KdfParams) -> ClientKeys:
        found = self._cache.get(kdf)
        if found is None:
            found = self._cache[kdf] = super().keys(kdf)
        return found


@dataclass
class LinkStats:
    """Counters shared by every link of one generator; `rtt_s` only while recording."""

    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    bad_frames: int = 0
    lost: int = 0  # connections Central closed (or reset) while we wanted them
    lost_ids: list[str] = field(default_factory=list)
    hb_sent: int = 0
    hb_late: int = 0  # a heartbeat due while the previous exchange was still unanswered
    recording: bool = False
    rtt_s: array[float] = field(default_factory=lambda: array("d"))


class CpLink(asyncio.Protocol):
    """One Monitor connection: one request in flight at a time, as the protocol says."""

    def __init__(self, cp_id: str, stats: LinkStats) -> None:
        self.cp_id = cp_id
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.authed = False
        self.closing = False
        self._decoder = FrameDecoder()
        self._awaiting_ack = False
        self._in_flight = False
        self._sent_at = 0.0
        self._waiter: asyncio.Future[tuple[Frame, float]] | None = None
        self._written_wall = 0.0
        self._queue: deque[tuple[bytes, asyncio.Future[tuple[Frame, float]]]] = deque()

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.stats.lost += 1
            self.stats.lost_ids.append(self.cp_id)
            log.warning("cp=%s: Central closed the connection (%s)", self.cp_id, exc or "EOF")
        self.transport = None
        self.authed = False
        failure = LinkDown(f"cp={self.cp_id}: connection closed")
        for fut in [self._waiter, *(f for _, f in self._queue)]:
            if fut is not None and not fut.done():
                fut.set_exception(failure)
        self._waiter = None
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_ack:
            if data[0] == ACK:
                self._awaiting_ack = False
                data = data[1:]
            else:
                self._broken(f"answered 0x{data[0]:02x} instead of ACK")
                return
        if not data:
            return
        if data == _OK_FRAME and not self._decoder.in_frame:  # the common case, without the decoder
            self._answered(Frame("OK"))
            return
        for result in self._decoder.feed(data):
            if isinstance(result, FrameError):
                self.stats.bad_frames += 1
                self._write(_NACK)
                log.warning("cp=%s: bad frame from Central: %s", self.cp_id, result)
            else:
                self._answered(result)

    # --- requests ---------------------------------------------------------------------

    def send_heartbeat(self, frame: bytes) -> bool:
        """Fire and forget; False (and nothing sent) while the previous exchange is unanswered."""
        if self._in_flight or not self.alive:
            return False
        self._start(frame, None)
        return True

    async def request(self, frame: bytes) -> tuple[Frame, float]:
        """Send after any exchange in flight; (answer, wall time the frame was written)."""
        if not self.alive:
            raise LinkDown(f"cp={self.cp_id}: not connected")
        fut: asyncio.Future[tuple[Frame, float]] = asyncio.get_running_loop().create_future()
        if self._in_flight:
            self._queue.append((frame, fut))
        else:
            self._start(frame, fut)
        return await fut

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _start(self, frame: bytes, fut: asyncio.Future[tuple[Frame, float]] | None) -> None:
        self._in_flight = True
        self._awaiting_ack = True
        self._waiter = fut
        self._sent_at = time.monotonic()
        self._written_wall = time.time()
        self.stats.sent += 1
        self._write(frame)

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _answered(self, frame: Frame) -> None:
        self._write(_ACK)
        self.stats.answers[frame.opcode] += 1
        if self.stats.recording:
            self.stats.rtt_s.append(time.monotonic() - self._sent_at)
        self._in_flight = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((frame, self._written_wall))
        if self._queue:
            frame_bytes, fut = self._queue.popleft()
            self._start(frame_bytes, fut)

    def _broken(self, why: str) -> None:
        log.warning("cp=%s: protocol breach by Central: %s", self.cp_id, why)
        if self.transport is not None:
            self.transport.abort()


def granted_key(
    cp_id: str,
    fields: tuple[str, ...],
    exchange: Exchange,
    message: bytes,
    keys: ClientKeys,
    encryption: bool,
) -> CpKey | None:
    """What AUTH_OK#cp#signature[#version#central_exchange#wrapped] gives this Monitor: with
    encryption, the CP's key (`open_grant` checks Central's signature and unwraps it); without
    (Central runs with --cp-encryption off), None once the signature is checked. GrantError when
    the answer does not verify or does not match the mode."""
    if not fields or fields[0] != cp_id:
        raise GrantError(f"AUTH_OK for another CP: {fields[:1]}")
    if len(fields) >= 5:
        if not encryption:
            raise GrantError("Central granted a key, but this run has encryption off")
        grant = KeyGrant(*fields[1:5])
        return open_grant(
            cp_id,
            grant,
            exchange=exchange,
            auth_message=message,
            keys=keys,
        )
    if encryption:
        raise GrantError("AUTH_OK without a key: is Central running with --cp-encryption off?")
    try:
        signature = unb64(fields[1]) if len(fields) > 1 else b""
    except ValueError:
        signature = b""
    if not signature_matches(keys, message, signature):
        raise GrantError("Central's signature does not match")
    return None


@dataclass(frozen=True)
class CpSpec:
    index: int  # position in the whole network (not in this shard)
    cp_id: str
    driver_id: str
    location: str
    price: str


@dataclass(slots=True, eq=False)
class CpSim:
    """One simulated CP: its Monitor link and its Engine's supply."""

    spec: CpSpec
    key: bytes
    partition: int
    hb_ok: bytes
    hb_ko: bytes
    link: CpLink | None = None
    sealer: wire.Sealer | None = None  # with encryption: the CP key's, for cp-events
    sender: Sender | None = None  # this Engine's nonces (an epoch per run, then a counter)
    engine_ok: bool = True
    session_id: str | None = None
    driver_id: str = ""
    price: Decimal = Decimal(0)
    supplying: bool = False
    seq: int = 0
    energy_wh: int = 0


@dataclass
class LoadConfig:
    kafka: str
    central_host: str
    central_port: int
    linger_ms: int = 5
    connect_concurrency: int = 200
    wh_per_tick: int = wire.WH_PER_TICK
    plug_in: bool = True  # Engines start supplying as soon as Central authorises
    secret: str = ""  # every bench CP's secret (`harness.issue_credentials`)
    encryption: bool = True  # False: Central runs with --cp-encryption off (the comparison)


class LoadGenerator:
    """Simulated Monitors and Engines (and their drivers) for a list of CPs, on one loop."""

    def __init__(self, cfg: LoadConfig, cps: list[CpSpec]) -> None:
        wire.check_against_contracts()
        self.cfg = cfg
        self.stats = LinkStats()
        self.sims = [self._sim(spec) for spec in cps]
        self.by_id = {sim.spec.cp_id: sim for sim in self.sims}
        self._keys: dict[KdfParams, ClientKeys] = {}
        self.codec = CpTopicCodec(KeyRing(), encrypt=cfg.encryption)  # opens cp-commands
        self.commands_rejected: Counter[str] = Counter()
        n = max(len(self.sims), 1)
        self._hb_slots: list[list[CpSim]] = [[] for _ in range(SLOTS)]
        self._tel_slots: list[list[CpSim]] = [[] for _ in range(SLOTS)]
        for k, sim in enumerate(self.sims):  # spread evenly over the second
            slot = k * SLOTS // n
            self._hb_slots[slot].append(sim)
            self._tel_slots[(slot + SLOTS // 2) % SLOTS].append(sim)
        self.telemetry_on = False
        self.recording = False
        self.sent_cp = array("i")
        self.sent_wh = array("i")
        self.sent_t = array("d")
        self.tel_sent = 0
        self.produce_errors = 0
        self.commands: Counter[str] = Counter()
        self.stopped_ids: list[str] = []
        self.late_ticks = 0
        self.worst_late_s = 0.0
        self._authorised = 0
        self._all_authorised = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _sim(self, spec: CpSpec) -> CpSim:
        return CpSim(
            spec=spec,
            key=spec.cp_id.encode(),
            partition=partition_for(spec.cp_id, CP_EVENTS.partitions),
            hb_ok=wire.heartbeat(spec.cp_id, True),
            hb_ko=wire.heartbeat(spec.cp_id, False),
        )

    # --- start and stop ---------------------------------------------------------------

    async def start(self) -> None:
        """Producer, cp-commands consumer (from now on), and the timing wheel."""
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.cfg.kafka,
            client_id="bench-loadgen",
            acks="all",
            linger_ms=self.cfg.linger_ms,
            max_batch_size=256 * 1024,
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.cfg.kafka,
            client_id="bench-loadgen",
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
            max_poll_records=2000,
        )
        await self._consumer.start()
        tps = [TopicPartition(CP_COMMANDS.name, p) for p in range(CP_COMMANDS.partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the positions now: commands sent from here on are ours
            await self._consumer.position(tp)
        self._tasks = [
            asyncio.create_task(self._consume(), name="loadgen-commands"),
            asyncio.create_task(self._wheel(), name="loadgen-wheel"),
        ]

    async def close(self) -> None:
        for sim in self.sims:
            if sim.link is not None:
                sim.link.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    # --- Monitors ---------------------------------------------------------------------

    async def connect(self, within: float = 120.0) -> dict[str, Any]:
        """Open every CP's link and AUTH it; heartbeats start as each one is accepted."""
        t0 = time.monotonic()
        gate = asyncio.Semaphore(self.cfg.connect_concurrency)
        refused: Counter[str] = Counter()

        async def one(sim: CpSim) -> None:
            async with gate:
                try:
                    await self._connect_one(sim)
                except (OSError, LinkDown, TimeoutError) as exc:
                    refused[type(exc).__name__] += 1
                    log.warning("cp=%s: could not connect: %s", sim.spec.cp_id, exc)

        async with asyncio.timeout(within):
            await asyncio.gather(*(one(sim) for sim in self.sims))
        accepted = sum(1 for sim in self.sims if sim.link is not None and sim.link.authed)
        return {
            "connected": accepted,
            "refused": dict(refused),
            "connect_s": round(time.monotonic() - t0, 2),
        }

    async def _connect_one(self, sim: CpSim) -> None:
        loop = asyncio.get_running_loop()
        link = CpLink(sim.spec.cp_id, self.stats)
        await loop.create_connection(lambda: link, self.cfg.central_host, self.cfg.central_port)
        sim.link = link
        async with asyncio.timeout(30):
            await self._authenticate(sim, link)
        link.authed = True

    async def _authenticate(self, sim: CpSim, link: CpLink) -> None:
        """The real exchange (SCRAM + X25519, docs/socket-protocol.md); every bench CP shares
        one secret and salt (`credentials`), so the scrypt stretch is paid once here, while
        Central's side is exactly a Monitor's. With encryption the CP's key is then held."""
        cp_id = sim.spec.cp_id
        client_nonce, exchange = new_nonce(), Exchange()
        challenge, _ = await link.request(wire.auth_frame(cp_id, client_nonce, exchange.public))
        if challenge.opcode != Opcode.CHALLENGE or len(challenge.fields) < 5:
            link.close()
            raise LinkDown(f"AUTH refused: {challenge}")
        prover = SharedProver(cp_id, self.cfg.secret, self._keys)
        try:
            salt, n, r, p, nonce = challenge.fields[:5]
            proof, message, keys = prover.answer(
                client_nonce, salt, n, r, p, nonce, exchange.public
            )
        except ChallengeError as exc:
            link.close()
            raise LinkDown(f"CHALLENGE refused: {exc}") from None
        answer, _ = await link.request(wire.proof_frame(cp_id, proof))
        if answer.opcode != Opcode.AUTH_OK:
            link.close()
            raise LinkDown(f"AUTH refused: {answer}")
        try:
            key = granted_key(cp_id, answer.fields, exchange, message, keys, self.cfg.encryption)
        except GrantError as exc:
            link.close()
            raise LinkDown(f"AUTH_OK refused: {exc}") from None
        if key is not None:
            self.hold_key(sim, key)

    def hold_key(self, sim: CpSim, key: CpKey) -> None:
        """From now on this CP's events are sealed with `key`, and its commands opened."""
        self.codec.ring.install(key)
        sim.sealer = wire.Sealer.of(key)
        if sim.sender is None:
            sim.sender = Sender()

    async def inject_fault(self, cp_id: str, kind: str) -> float:
        """The Monitor reports an Engine KO (`FAULT` frame or `HB#cp#KO`); wall time it was sent."""
        sim = self.by_id[cp_id]
        sim.engine_ok = False
        frame = encode(Opcode.FAULT, cp_id, "bench fault") if kind == "FAULT" else sim.hb_ko
        return await self._request(sim, frame)

    async def recover(self, cp_id: str, kind: str) -> float:
        sim = self.by_id[cp_id]
        sim.engine_ok = True
        frame = encode(Opcode.RECOVER, cp_id) if kind == "FAULT" else sim.hb_ok
        return await self._request(sim, frame)

    async def _request(self, sim: CpSim, frame: bytes) -> float:
        if sim.link is None:
            raise LinkDown(f"cp={sim.spec.cp_id}: not connected")
        answer, written = await sim.link.request(frame)
        if answer.opcode != "OK":
            log.warning("cp=%s: Central answered %s", sim.spec.cp_id, answer)
        return written

    # --- drivers and Engines ----------------------------------------------------------

    async def request_supplies(self) -> int:
        """Every CP's driver asks for a supply there (a burst, as at the start of a busy hour)."""
        assert self._producer is not None
        self._authorised = 0
        self._all_authorised.clear()
        ts = wire.now_iso()
        for sim in self.sims:
            value = wire.authorization_request(
                sim.spec.driver_id, sim.spec.cp_id, str(uuid.uuid4()), ts
            )
            await self._send(DRIVER_EVENTS.name, sim.spec.driver_id.encode(), value, None)
        await self._producer.flush()
        return len(self.sims)

    async def wait_supplying(self, within: float) -> int:
        """Until every CP has been authorised (and sent SUPPLY_STARTED), or `within` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._all_authorised.wait()
        return sum(1 for sim in self.sims if sim.supplying)

    def start_telemetry(self) -> None:
        self.telemetry_on = True

    def mark(self) -> None:
        """Steady state starts: reset the counters and record every reading sent from now on."""
        self.stats.hb_sent = self.stats.hb_late = 0
        self.stats.rtt_s = array("d")
        self.stats.recording = True
        self.recording = True
        self.sent_cp, self.sent_wh, self.sent_t = array("i"), array("i"), array("d")
        self.late_ticks, self.worst_late_s = 0, 0.0

    def stop_recording(self) -> None:
        self.recording = False
        self.stats.recording = False

    async def end_supplies(self, extra_wh: int) -> list[tuple[str, str, int, str]]:
        """Unplug every supplying CP: SUPPLY_ENDED with the final reading (last + `extra_wh`).

        Returns (cp id, session id, final Wh, price) of each, for the billing check."""
        assert self._producer is not None
        self.telemetry_on = False
        finals: list[tuple[str, str, int, str]] = []
        ts = wire.now_iso()
        for sim in self.sims:
            if not sim.supplying or sim.session_id is None:
                continue
            sim.supplying = False
            sim.energy_wh += extra_wh
            value = wire.supply_ended(
                sim.spec.cp_id, sim.session_id, sim.driver_id, sim.energy_wh, "unplugged", ts
            )
            await self._send_cp(sim, value)
            finals.append((sim.spec.cp_id, sim.session_id, sim.energy_wh, str(sim.price)))
        await self._producer.flush()
        return finals

    async def _send_cp(self, sim: CpSim, value: bytes) -> None:
        """An Engine event on cp-events: sealed with the CP's key (encryption on), else plain.
        Sealed right before it is queued, so a CP's nonces rise in its records' order."""
        sealer, sender = sim.sealer, sim.sender
        if sealer is not None and sender is not None:
            value = sealer.seal(sender.next_nonce(), value)
        elif self.cfg.encryption:
            log.warning("cp=%s: no key to seal with: event not sent", sim.spec.cp_id)
            return
        await self._send(CP_EVENTS.name, sim.key, value, sim.partition)

    async def _send(self, topic: str, key: bytes, value: bytes, partition: int | None) -> None:
        assert self._producer is not None
        fut = await self._producer.send(topic, value, key=key, partition=partition)
        fut.add_done_callback(self._delivered)

    def _delivered(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.produce_errors += 1
            if self.produce_errors <= 5:
                log.warning(
                    "produce failed: %s", "cancelled" if fut.cancelled() else fut.exception()
                )

    async def _consume(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    await self._on_command(record.key, record.value, tp.partition, record.offset)

    async def _on_command(
        self, key: bytes | None, value: bytes | None, partition: int = 0, offset: int = -1
    ) -> None:
        """A cp-commands record: opened (sealed with the CP's key, or plain when encryption is
        off) as the Engine's codec does, then acted on as an Engine would."""
        sim = self.by_id.get(key.decode()) if key else None
        if sim is None or value is None:
            return  # another shard's CP, or not one of ours
        try:
            event = self.codec.decode(
                CP_COMMANDS.base, value, record_key=key, partition=partition, offset=offset
            )
        except (RecordRejected, BadEvent) as exc:
            kind = exc.kind.value if isinstance(exc, RecordRejected) else "malformed"
            self.commands_rejected[kind] += 1
            if self.commands_rejected[kind] == 1:
                log.warning("cp=%s: command dropped: %s", sim.spec.cp_id, exc)
            return
        if event is None:
            return  # a redelivery
        self.commands[event.event_type] += 1
        if isinstance(event, SupplyAuthorised) and self.cfg.plug_in:
            await self._plug_in(sim, event)
        elif (
            isinstance(event, StopSupply)
            and str(event.session_id) == sim.session_id
            and sim.supplying
        ):
            sim.supplying = False  # a real Engine stops; the bench counts it as a failure
            self.stopped_ids.append(sim.spec.cp_id)
            log.warning("cp=%s: Central stopped the supply (%s)", sim.spec.cp_id, event.reason)

    async def _plug_in(self, sim: CpSim, event: SupplyAuthorised) -> None:
        if sim.supplying:
            return
        sim.session_id = str(event.session_id)
        sim.driver_id = event.driver_id
        sim.price = event.price_eur_per_kwh
        sim.seq, sim.energy_wh = 0, 0
        value = wire.supply_started(sim.spec.cp_id, sim.session_id, sim.driver_id, wire.now_iso())
        await self._send_cp(sim, value)
        sim.supplying = True
        self._authorised += 1
        if self._authorised >= len(self.sims):
            self._all_authorised.set()

    # --- the timing wheel -------------------------------------------------------------

    async def _wheel(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        k = 0
        while True:
            late = loop.time() - (start + k * TICK_S)
            if late < 0:
                await asyncio.sleep(-late)
            elif late > TICK_S:
                self.late_ticks += 1
                self.worst_late_s = max(self.worst_late_s, late)
            await self._tick(k % SLOTS)
            k += 1

    async def _tick(self, slot: int) -> None:
        stats = self.stats
        for sim in self._hb_slots[slot]:
            link = sim.link
            if link is None or not link.authed:
                continue
            if link.send_heartbeat(sim.hb_ok if sim.engine_ok else sim.hb_ko):
                stats.hb_sent += 1
            elif link.alive:
                stats.hb_late += 1
        if self.telemetry_on:
            await self._readings(self._tel_slots[slot])

    async def _readings(self, sims: list[CpSim]) -> None:
        now, ts = time.time(), wire.now_iso()
        step = self.cfg.wh_per_tick
        send, sealing, topic = self._send, self.cfg.encryption, CP_EVENTS.name
        key_missing = 0
        for sim in sims:
            if not sim.supplying or sim.session_id is None:
                continue
            sim.seq += 1
            sim.energy_wh += step
            amount = wire.amount_text(sim.energy_wh, sim.price)
            value = wire.telemetry(
                sim.spec.cp_id, sim.session_id, sim.driver_id, sim.seq, sim.energy_wh, amount, ts
            )
            if sealing:  # inline (`_send_cp`): this is the generator's hot path
                if sim.sealer is None or sim.sender is None:
                    key_missing += 1
                    continue
                value = sim.sealer.seal(sim.sender.next_nonce(), value)
            await send(topic, sim.key, value, sim.partition)
            self.tel_sent += 1
            if self.recording:
                self.sent_cp.append(sim.spec.index)
                self.sent_wh.append(sim.energy_wh)
                self.sent_t.append(now)
        if key_missing:
            log.warning("%d readings not sent: their CPs hold no key", key_missing)

    # --- figures ----------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        s = self.stats
        rtt = summary_ms(s.rtt_s)
        return {
            "cps": len(self.sims),
            "links_alive": sum(1 for sim in self.sims if sim.link is not None and sim.link.alive),
            "links_lost": s.lost,
            "links_lost_ids": s.lost_ids[:20],
            "hb_sent": s.hb_sent,
            "hb_late": s.hb_late,
            "hb_rtt": rtt,
            "answers": dict(s.answers),
            "bad_frames": s.bad_frames,
            "supplying": sum(1 for sim in self.sims if sim.supplying),
            "telemetry_sent": self.tel_sent,
            "produce_errors": self.produce_errors,
            "commands": dict(self.commands),
            "commands_rejected": dict(self.commands_rejected),
            "encryption": self.cfg.encryption,
            "keys_held": len(self.codec.ring.cp_ids()),
            "supplies_stopped_by_central": len(self.stopped_ids),
            "stopped_ids": self.stopped_ids[:20],
            "late_ticks": self.late_ticks,
            "worst_tick_late_ms": round(self.worst_late_s * 1000, 1),
        }

    def dump_sent(self, path: Path) -> int:
        """The readings sent while recording: count, then cp indexes, Wh and send times."""
        n = len(self.sent_cp)
        with path.open("wb") as out:
            out.write(struct.pack("<q", n))
            self.sent_cp.tofile(out)
            self.sent_wh.tofile(out)
            self.sent_t.tofile(out)
        return n


def load_sent(path: Path) -> list[tuple[int, int, float]]:
    with path.open("rb") as src:
        (n,) = struct.unpack("<q", src.read(8))
        cps, whs, ts = array("i"), array("i"), array("d")
        cps.fromfile(src, n)
        whs.fromfile(src, n)
        ts.fromfile(src, n)
    return list(zip(cps, whs, ts, strict=True))


# --- worker processes ---------------------------------------------------------------------------


class Worker:
    """Runs a LoadGenerator in this process, driven by JSON lines on stdin (one answer each)."""

    def __init__(self, gen: LoadGenerator, dump: Path) -> None:
        self.gen = gen
        self.dump = dump

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        gen, op = self.gen, cmd["op"]
        if op == "start":
            await gen.start()
            return {}
        if op == "connect":
            return await gen.connect(float(cmd.get("within", 120)))
        if op == "supply":
            await gen.request_supplies()
            supplying = await gen.wait_supplying(float(cmd["ramp_s"]))
            gen.start_telemetry()
            return {"supplying": supplying}
        if op == "mark":
            gen.mark()
            return {}
        if op == "stop_recording":
            gen.stop_recording()
            return {"sent": gen.dump_sent(self.dump), "file": str(self.dump)}
        if op == "figures":
            return gen.figures()
        if op == "end":
            return {"finals": await gen.end_supplies(int(cmd["extra_wh"]))}
        raise ValueError(f"unknown op {op!r}")


async def _serve_stdin(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                break
            try:
                reply: dict[str, Any] = {"ok": True, **await worker.handle(cmd)}
            except (ValueError, KeyError, OSError, LinkDown, TimeoutError) as exc:
                log.exception("loadgen worker: %s failed", cmd.get("op"))
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        await worker.gen.close()


def worker_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    p.add_argument("--spec", type=Path, required=True, help="JSON: config, cps, dump file")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s loadgen %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    spec = json.loads(args.spec.read_text(encoding="utf-8"))
    gen = LoadGenerator(LoadConfig(**spec["config"]), [CpSpec(**c) for c in spec["cps"]])
    with asyncio.Runner(loop_factory=loop_factory()) as runner:  # the same loop as Central's
        runner.run(_serve_stdin(Worker(gen, Path(spec["dump"]))))
    return 0


@dataclass
class _Proc:
    proc: asyncio.subprocess.Process
    dump: Path


class Workers:
    """The orchestrator's side: K worker processes sharing the CPs, called all at once
    (`module`: the generator they run, `bench.ocpp_load` for the OCPP gateway's benchmark)."""

    def __init__(
        self,
        cfg: Any,
        cps: list[CpSpec],
        count: int,
        workdir: Path,
        module: str = "bench.loadgen",
    ) -> None:
        self.cfg = cfg
        self.module = module
        self.shards = [cps[k::count] for k in range(count)]
        self.workdir = workdir
        self._procs: list[_Proc] = []

    @property
    def pids(self) -> list[int]:
        return [p.proc.pid for p in self._procs]

    async def start(self) -> None:
        from bench.harness import REPO  # the repo root: `bench` and `tests` import from there

        for k, shard in enumerate(self.shards):
            name = self.module.rsplit(".", 1)[-1]
            spec = self.workdir / f"{name}-{k}.json"
            dump = self.workdir / f"{name}-{k}.sent"
            spec.write_text(
                json.dumps(
                    {
                        "config": asdict(self.cfg),
                        "cps": [asdict(c) for c in shard],
                        "dump": str(dump),
                    }
                ),
                encoding="utf-8",
            )
            errors = (self.workdir / f"{name}-{k}.log").open("ab")
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.module,
                "--spec",
                str(spec),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=errors,
                cwd=REPO,
                limit=1 << 26,
            )
            errors.close()
            self._procs.append(_Proc(proc, dump))
        await self.call("start", within=60)

    async def call(self, op: str, within: float, **args: Any) -> list[dict[str, Any]]:
        """The same command to every worker; their answers, in shard order."""
        async with asyncio.timeout(within):
            return list(await asyncio.gather(*(self._one(p, op, args) for p in self._procs)))

    async def _one(self, p: _Proc, op: str, args: dict[str, Any]) -> dict[str, Any]:
        assert p.proc.stdin is not None
        assert p.proc.stdout is not None
        p.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        await p.proc.stdin.drain()
        line = await p.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"loadgen worker pid={p.proc.pid} exited during {op}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.pop("ok", False):
            raise RuntimeError(f"loadgen worker pid={p.proc.pid}: {op} failed: {reply}")
        return reply

    def sent(self) -> list[tuple[int, int, float]]:
        out: list[tuple[int, int, float]] = []
        for p in self._procs:
            out += load_sent(p.dump)
        return out

    async def close(self) -> None:
        for p in self._procs:
            if p.proc.returncode is None and p.proc.stdin is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    p.proc.stdin.write(b'{"op": "quit"}\n')
                    await p.proc.stdin.drain()
        for p in self._procs:
            try:
                async with asyncio.timeout(15):
                    await p.proc.wait()
            except TimeoutError:
                log.warning("loadgen worker pid=%s did not quit; killing it", p.proc.pid)
                p.proc.kill()
                await p.proc.wait()


def merge_figures(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up the workers' counters (RTT percentiles: the worst worker's)."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, bool):
                out[key] = out.get(key, False) or value
            elif isinstance(value, int | float) and not key.startswith("worst"):
                out[key] = out.get(key, 0) + value
            elif isinstance(value, list):
                out[key] = [*out.get(key, []), *value][:20]
            elif isinstance(value, dict) and key != "hb_rtt":
                merged = Counter(out.get(key, {}))
                merged.update(value)
                out[key] = dict(merged)
            elif key == "hb_rtt":
                best = out.get(key, {})
                out[key] = (
                    value
                    if value.get("p99_ms") and value["p99_ms"] > (best.get("p99_ms") or -math.inf)
                    else best
                )
            else:
                out[key] = max(out.get(key, value), value)
    return out


if __name__ == "__main__":
    sys.exit(worker_main())
