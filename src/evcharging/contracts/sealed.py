"""The sealed record: how an Engine <-> Central event travels on `cp-events` and `cp-commands`.

Every record on those two topics is one AEAD ciphertext (AES-256-GCM, `services.cp_keys`) behind a
short clear header, so the receiver can pick the key without reading anything else:

    magic    3 bytes  b"EVS"          (plain records are JSON and start with "{")
    format   1 byte   1
    version  4 bytes  the CP key's version (big-endian), bumped at every key issue
    nonce   12 bytes  sender epoch (8 random bytes per sender run) + counter (4 bytes)
    cp_len   1 byte   then the CP id, UTF-8
    ....     the event's JSON, encrypted, and GCM's 16-byte tag

The associated data is `AAD_LABEL | topic | header`: a record moved to another topic, re-labelled
with another CP or key version, or cut, fails its tag.  The event type, the driver, the figures and
the command are all inside the ciphertext; the CP id and the key version are in clear (the Kafka
key is the CP id anyway).  Why this shape: docs/security.md, "Per-CP keys".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

from evcharging.contracts.topics import CP_COMMANDS, CP_EVENTS

MAGIC = b"EVS"
FORMAT = 1
NONCE_BYTES = 12
EPOCH_BYTES = 8
TAG_BYTES = 16
AAD_LABEL = b"evcharging/sealed/1"
SEALED_TOPICS: frozenset[str] = frozenset({CP_EVENTS.base, CP_COMMANDS.base})
"""The topics whose records are sealed (by base name: the namespace does not change the rule)."""

_FIXED = struct.Struct(">3sBI12sB")  # magic, format, key version, nonce, cp id length
FIXED_SIZE = _FIXED.size


class RejectKind(StrEnum):
    """Why a record on a sealed topic was dropped (the audit row's `kind`, the log's words)."""

    NOT_SEALED = "not_sealed"  # plain JSON where a sealed record is required
    MALFORMED = "malformed"  # not a well-formed sealed record
    NO_KEY = "no_key"  # the receiver holds no key for this CP (never issued, or revoked)
    OLD_KEY = "old_key"  # a key version revoked or retired (replaced by a newer one in use)
    UNKNOWN_KEY = "unknown_key"  # a key version the receiver was never given
    FORGED = "forged"  # the tag does not verify: wrong key, altered or moved record
    MISROUTED = "misrouted"  # decrypts, but names another CP or belongs to another topic
    REPLAYED = "replayed"  # this record (key version, epoch, counter) was already accepted

    @property
    def words(self) -> str:
        return _WORDS[self]


_WORDS = {
    RejectKind.NOT_SEALED: "not encrypted",
    RejectKind.MALFORMED: "not a sealed record",
    RejectKind.NO_KEY: "no key for this CP (revoked or never issued)",
    RejectKind.OLD_KEY: "an old or revoked key version",
    RejectKind.UNKNOWN_KEY: "a key version never issued",
    RejectKind.FORGED: "authentication failed (wrong key or altered)",
    RejectKind.MISROUTED: "addressed to another CP or topic",
    RejectKind.REPLAYED: "a replayed record",
}


class SealedFormatError(ValueError):
    """Bytes that are not a sealed record."""


@dataclass(frozen=True, slots=True)
class SealedHeader:
    cp_id: str
    key_version: int
    nonce: bytes

    @property
    def epoch(self) -> bytes:
        return self.nonce[:EPOCH_BYTES]

    @property
    def counter(self) -> int:
        return int.from_bytes(self.nonce[EPOCH_BYTES:], "big")

    def to_bytes(self) -> bytes:
        cp = self.cp_id.encode("utf-8")
        if not 0 < len(cp) < 256 or len(self.nonce) != NONCE_BYTES:
            raise ValueError("a sealed header needs a 1-255 byte CP id and a 12-byte nonce")
        return _FIXED.pack(MAGIC, FORMAT, self.key_version, self.nonce, len(cp)) + cp


def is_sealed(value: bytes | None) -> bool:
    return value is not None and value[:3] == MAGIC


def split(value: bytes) -> tuple[SealedHeader, bytes, bytes]:
    """(header, the header's bytes, ciphertext with tag); SealedFormatError if malformed."""
    cp_id, version, nonce, end = split_fields(value)
    return SealedHeader(cp_id, version, nonce), value[:end], value[end:]


def split_fields(value: bytes) -> tuple[str, int, bytes, int]:
    """(CP id, key version, nonce, where the ciphertext starts): `split` without building the
    header object (the receiver's hot path: one call per record)."""
    if len(value) < FIXED_SIZE:
        raise SealedFormatError("shorter than a sealed header")
    magic, fmt, version, nonce, cp_len = _FIXED.unpack_from(value)
    if magic != MAGIC or fmt != FORMAT:
        raise SealedFormatError("not a sealed record of format 1")
    end = FIXED_SIZE + cp_len
    if cp_len == 0 or len(value) < end + TAG_BYTES:
        raise SealedFormatError("truncated sealed record")
    try:
        cp_id = value[FIXED_SIZE:end].decode("utf-8")
    except UnicodeDecodeError:
        raise SealedFormatError("CP id is not UTF-8") from None
    return cp_id, version, nonce, end


def associated_data(topic_base: str, header: bytes) -> bytes:
    """What the tag covers besides the ciphertext: the label, the topic and the clear header."""
    return aad_prefix(topic_base) + header


def aad_prefix(topic_base: str) -> bytes:
    """The associated data before the header (a receiver computes it once per topic)."""
    return b"|".join((AAD_LABEL, topic_base.encode("ascii"), b""))
