"""Encrypt + decrypt per message (issue 14): what sealing a CP's record costs, away from Kafka.

One real `CP_TELEMETRY` (the record Central reads most: one per supplying CP per second), timed
message by message (`perf_counter_ns` around each call), over the same bytes each path:

- `aesgcm`: the bare primitive, `AESGCM.encrypt` then `decrypt` (the floor);
- `codec`: the product's path, `cp_keys.seal` (serialises the event, then seals) and
  `CpTopicCodec.decode` (header split, key lookup, decrypt, parse, misroute and replay checks);
- `plain`: what the same message costs with encryption off (`to_bytes`, `parse_event`), so
  `codec - plain` is what encryption adds per message;
- `loadgen`: the load generator's `wire.Sealer` sealing pre-serialised JSON.

Central opens every cp-events record, so its extra CPU per message is about `codec open - plain
parse`; the report divides that by Central's measured CPU per message for its share.
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from bench import wire
from bench.harness import write_result
from bench.stats import percentile
from evcharging.contracts.events import CpTelemetry, parse_event
from evcharging.contracts.sealed import associated_data
from evcharging.contracts.topics import CP_EVENTS
from evcharging.services.cp_keys import CpTopicCodec, KeyRing, Sender, new_key, seal

log = logging.getLogger(__name__)

CP = "CP00042"


@dataclass(frozen=True)
class SealParams:
    messages: int = 100_000

    @classmethod
    def quick(cls) -> SealParams:
        return cls(messages=10_000)


def sample_event() -> CpTelemetry:
    """A reading as an Engine sends it in the scale runs (wire's template, parsed)."""
    wh = 12_345
    plain = wire.telemetry(
        CP,
        str(uuid.uuid4()),
        "DCP00042",
        321,
        wh,
        wire.amount_text(wh, Decimal("0.35")),
        wire.now_iso(),
    )
    event = parse_event(plain)
    assert isinstance(event, CpTelemetry)
    return event


def summary_us(ns: list[int]) -> dict[str, Any]:
    ordered = sorted(ns)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "mean_us": round(sum(ordered) / len(ordered) / 1000, 2),
        "p50_us": round(percentile(ordered, 50) / 1000, 2),
        "p99_us": round(percentile(ordered, 99) / 1000, 2),
    }


Summary = dict[str, Any]


def _timed(
    messages: int, write: Callable[[int], bytes], read: Callable[[int, bytes], object]
) -> tuple[Summary, Summary, Summary]:
    """Per message: ns to write it, ns to read it back, and the two together."""
    clock = time.perf_counter_ns
    w_ns, r_ns, both = [0] * messages, [0] * messages, [0] * messages
    for i in range(messages):
        t0 = clock()
        value = write(i)
        t1 = clock()
        read(i, value)
        t2 = clock()
        w_ns[i], r_ns[i], both[i] = t1 - t0, t2 - t1, t2 - t0
    return summary_us(w_ns), summary_us(r_ns), summary_us(both)


def run(params: SealParams) -> dict[str, Any]:
    event = sample_event()
    plain = event.to_bytes()
    key = new_key(CP, 1)
    ring = KeyRing()
    ring.install(key)
    record_key = CP.encode()
    topic = CP_EVENTS.base
    paths: dict[str, dict[str, Any]] = {}

    # the primitive alone: a counter nonce, the associated data of a real header
    sender = Sender()
    aad = associated_data(topic, b"EVS" + bytes(30))
    aead = key.aead
    nonces: list[bytes] = []

    def aes_encrypt(_: int) -> bytes:
        nonce = sender.next_nonce()
        nonces.append(nonce)
        return aead.encrypt(nonce, plain, aad)

    def aes_decrypt(i: int, value: bytes) -> object:
        return aead.decrypt(nonces[i], value, aad)

    # the product's path: seal(event) and the codec's checks (a fresh codec: a fresh replay window)
    codec = CpTopicCodec(ring)
    codec_sender = Sender()

    def codec_seal(_: int) -> bytes:
        return seal(event, key, codec_sender)

    def codec_open(i: int, value: bytes) -> object:
        opened = codec.decode(topic, value, record_key=record_key, partition=0, offset=i)
        assert opened is not None
        return opened

    # encryption off: what Central and an Engine do with the same message anyway
    def plain_write(_: int) -> bytes:
        return event.to_bytes()

    def plain_read(_: int, value: bytes) -> object:
        return parse_event(value)

    # the load generator: pre-serialised JSON sealed as it is (opened by a codec of its own)
    sealer, gen_sender = wire.Sealer.of(key), Sender()
    gen_codec = CpTopicCodec(ring)

    def gen_seal(_: int) -> bytes:
        return sealer.seal(gen_sender.next_nonce(), plain)

    def gen_open(i: int, value: bytes) -> object:
        return gen_codec.decode(topic, value, record_key=record_key, partition=0, offset=i)

    runs = {
        "aesgcm": (aes_encrypt, aes_decrypt),
        "codec": (codec_seal, codec_open),
        "plain": (plain_write, plain_read),
        "loadgen": (gen_seal, gen_open),
    }
    gc.collect()
    for name, (write, read) in runs.items():
        _timed(min(2000, params.messages), write, read)  # warm-up
        nonces.clear()
        codec, gen_codec = CpTopicCodec(ring), CpTopicCodec(ring)
        w, r, both = _timed(params.messages, write, read)
        paths[name] = {"write": w, "read": r, "both": both}
        log.info("seal: %s: %s us per message (p50)", name, both.get("p50_us"))
    sealed = seal(event, key, Sender())
    results = {
        "message": "CP_TELEMETRY",
        "plaintext_bytes": len(plain),
        "sealed_bytes": len(sealed),
        "paths": paths,
        "extra_us": extra(paths),
    }
    write_result("seal", asdict(params), results)
    return results


def extra(paths: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What encryption adds per message: the codec's path minus the plain one (mean and p50)."""
    out: dict[str, Any] = {}
    for side in ("write", "read", "both"):
        for stat in ("mean_us", "p50_us"):
            on, off = paths["codec"][side].get(stat), paths["plain"][side].get(stat)
            if on is not None and off is not None:
                out[f"{side}_{stat}"] = round(on - off, 2)
    return out
