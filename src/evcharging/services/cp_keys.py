"""A symmetric key per CP: issued at authentication, sealing every Engine <-> Central record.

* **Issue** (Central, at a right PROOF): a fresh random 256-bit key with the CP's next version.
  It travels to the Monitor *wrapped* in AUTH_OK: AES-GCM under a key-encryption key derived
  with HKDF from an ephemeral X25519 exchange (the Monitor's public key is in AUTH, bound by its
  proof; Central's in AUTH_OK, bound by Central's signature) *and* SCRAM's client key.  A capture
  of the socket gives nothing (forward secrecy: the X25519 private keys die with the exchange),
  and neither does a capture plus the stolen verifier table.  The Monitor hands it to its Engine
  the same way (`handover_*`: a second X25519 exchange on the local link).
* **At rest** (Central): each key is sealed under the master key (`MasterKey`, a file or env).
* **On the topics**: `seal`/`CpTopicCodec` (AES-256-GCM, nonce = sender epoch + counter, the
  header and topic as associated data: `contracts.sealed`), and on the way in the checks that
  drop forgeries, records moved to another CP or topic, old or revoked keys and replays.
* **Rotation without loss**: a receiver keeps a CP's older keys until a newer one has been
  *used* by the sender (Kafka keeps a CP's records in order, so nothing older can follow);
  revocation drops them all at once.

Every primitive is `cryptography`'s; `secrets`/`os.urandom` for randomness.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from evcharging.contracts.events import BadEvent, Event, parse_event
from evcharging.contracts.sealed import (
    EPOCH_BYTES,
    FIXED_SIZE,
    NONCE_BYTES,
    SEALED_TOPICS,
    RejectKind,
    SealedFormatError,
    SealedHeader,
    aad_prefix,
    associated_data,
    is_sealed,
    split_fields,
)
from evcharging.services.cp_auth import (
    ClientKeys,
    b64,
    server_signature,
    signature_matches,
    unb64,
)

KEY_BYTES = 32  # AES-256
MAX_KEYS_PER_CP = 4  # issued but not yet superseded in use (a flapping Monitor re-authenticating)
REPLAY_WINDOW = 1024  # how far below the newest counter a late record is still accepted once
MAX_EPOCHS_PER_KEY = 16  # sender runs remembered per CP key (an Engine restart is a new epoch)
WRAP_NONCE = 12


# --- keys ---------------------------------------------------------------------------------


class CpKey:
    """One CP's key at one version. The secret never appears in repr, logs or errors."""

    __slots__ = ("_aead", "_secret", "cp_id", "version")

    def __init__(self, cp_id: str, version: int, secret: bytes) -> None:
        if len(secret) != KEY_BYTES:
            raise ValueError("a CP key is 32 bytes")
        self.cp_id = cp_id
        self.version = version
        self._secret = secret
        self._aead = AESGCM(secret)

    @property
    def secret(self) -> bytes:
        return self._secret

    @property
    def aead(self) -> AESGCM:
        return self._aead

    def __repr__(self) -> str:
        return f"CpKey({self.cp_id!r}, v{self.version})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CpKey) and (self.cp_id, self.version, self._secret) == (
            other.cp_id,
            other.version,
            other._secret,
        )

    def __hash__(self) -> int:
        return hash((self.cp_id, self.version))


def new_key(cp_id: str, version: int) -> CpKey:
    return CpKey(cp_id, version, AESGCM.generate_key(bit_length=KEY_BYTES * 8))


class KeyUnavailable(LookupError):
    """The sender holds no key for this CP (not yet handed over, or revoked): wait for one."""


class Sender:
    """One sender's nonces: a random 8-byte epoch per run, then a counter (NIST SP 800-38D's
    deterministic construction). Unique per key as long as epochs do not collide (2^-64 each)."""

    def __init__(self) -> None:
        self._epoch = os.urandom(EPOCH_BYTES)
        self._count = 0

    def next_nonce(self) -> bytes:
        self._count += 1
        if self._count >= 2**32:
            self._epoch, self._count = os.urandom(EPOCH_BYTES), 1
        return self._epoch + self._count.to_bytes(NONCE_BYTES - EPOCH_BYTES, "big")


def seal(event: Event, key: CpKey, sender: Sender) -> bytes:
    """The record value for `event` (cp-events or cp-commands) sealed with `key`."""
    nonce = sender.next_nonce()
    header = SealedHeader(key.cp_id, key.version, nonce).to_bytes()
    aad = associated_data(event.TOPIC.base, header)
    return header + key.aead.encrypt(nonce, event.to_bytes(), aad)


class KeyRing:
    """The keys one party holds, per CP, oldest first (Central: every CP's; an Engine: its own).

    `install` adds a newer key; `used` says the sender has used a version, which retires every
    older one; `drop` revokes them all. `current` is what a sender seals with (the newest)."""

    def __init__(self, max_per_cp: int = MAX_KEYS_PER_CP) -> None:
        self._keys: dict[str, dict[int, CpKey]] = {}
        self._floor: dict[str, int] = {}  # versions <= this are retired or revoked
        self._max = max_per_cp
        self._installed = asyncio.Event()

    def install(self, key: CpKey) -> list[int]:
        """Adds `key`; returns versions pushed out by the bound (the oldest first)."""
        keys = self._keys.setdefault(key.cp_id, {})
        keys[key.version] = key
        dropped: list[int] = []
        while len(keys) > self._max:
            oldest = min(keys)
            del keys[oldest]
            dropped.append(oldest)
        if dropped:
            self._floor[key.cp_id] = max(self._floor.get(key.cp_id, 0), dropped[-1])
        self._notify()
        return dropped

    def current(self, cp_id: str) -> CpKey | None:
        keys = self._keys.get(cp_id)
        return keys[max(keys)] if keys else None

    def get(self, cp_id: str, version: int) -> CpKey | None:
        keys = self._keys.get(cp_id)
        return keys.get(version) if keys else None

    def versions(self, cp_id: str) -> list[int]:
        return sorted(self._keys.get(cp_id, ()))

    def cp_ids(self) -> list[str]:
        return [cp for cp, keys in self._keys.items() if keys]

    def retired(self, cp_id: str, version: int) -> bool:
        """An old or revoked version (as opposed to one never issued)."""
        return version <= self._floor.get(cp_id, 0)

    def used(self, cp_id: str, version: int) -> list[int]:
        """The sender sealed with `version`: the older ones are retired; returns them."""
        keys = self._keys.get(cp_id)
        if not keys:
            return []
        older = [v for v in keys if v < version]
        for v in older:
            del keys[v]
        if older:
            self._floor[cp_id] = max(self._floor.get(cp_id, 0), max(older))
        return sorted(older)

    def drop(self, cp_id: str, *, through: int | None = None) -> list[int]:
        """Revokes every key of the CP (and, with `through`, every version up to it)."""
        keys = self._keys.pop(cp_id, {})
        highest = max([*keys, through or 0, self._floor.get(cp_id, 0)])
        self._floor[cp_id] = highest
        return sorted(keys)

    def forget_floor(self, cp_id: str, floor: int) -> None:
        """At load: the highest version known revoked or retired (kept in the database)."""
        self._floor[cp_id] = max(self._floor.get(cp_id, 0), floor)

    async def wait_for(self, cp_id: str, version: int | None = None) -> CpKey:
        """The CP's key of `version` (or any key) once it is installed."""
        while True:
            key = self.get(cp_id, version) if version is not None else self.current(cp_id)
            if key is not None:
                return key
            self._installed.clear()
            await self._installed.wait()

    def _notify(self) -> None:
        self._installed.set()


class ReplayGuard:
    """Remembers, per CP key and sender epoch, which counters were accepted (a sliding window
    of `REPLAY_WINDOW`, as IPsec's and DTLS's): a record seen once is refused the second time,
    even if records arrive a little out of order."""

    def __init__(self, window: int = REPLAY_WINDOW, epochs: int = MAX_EPOCHS_PER_KEY) -> None:
        self._window = window
        self._mask = (1 << window) - 1
        self._epochs = epochs
        # (cp, version) -> epoch -> [highest counter, bitmap of the window below it]
        self._marks: dict[tuple[str, int], dict[bytes, list[int]]] = {}

    def fresh(self, header: SealedHeader) -> bool:
        """True (and remembered) the first time this (CP, version, epoch, counter) is seen."""
        return self.fresh_nonce(header.cp_id, header.key_version, header.nonce)

    def fresh_nonce(self, cp_id: str, version: int, nonce: bytes) -> bool:
        """`fresh` from the header's fields (the hot path builds no header object)."""
        runs = self._marks.get((cp_id, version))
        if runs is None:
            runs = self._marks[(cp_id, version)] = {}
        epoch, counter = nonce[:EPOCH_BYTES], int.from_bytes(nonce[EPOCH_BYTES:], "big")
        mark = runs.get(epoch)
        if mark is None:
            runs[epoch] = [counter, 1]
            if len(runs) > self._epochs:  # the sender run seen first goes (a dict keeps order)
                del runs[next(iter(runs))]
            return True
        highest, seen = mark
        if counter > highest:
            shift = counter - highest
            mark[0] = counter
            mark[1] = ((seen << shift) | 1) & self._mask if shift < self._window else 1
            return True
        back = highest - counter
        if back >= self._window or (seen >> back) & 1:
            return False
        mark[1] = seen | (1 << back)
        return True

    def forget(self, cp_id: str, versions: Iterable[int]) -> None:
        for version in versions:
            self._marks.pop((cp_id, version), None)


class RecordRejected(Exception):
    """A record on a sealed topic dropped: why, and the CP and key version it claimed."""

    def __init__(
        self, kind: RejectKind, cp_id: str | None = None, key_version: int | None = None
    ) -> None:
        super().__init__(kind.words)
        self.kind = kind
        self.cp_id = cp_id
        self.key_version = key_version

    @property
    def reason(self) -> str:
        who = f" (cp {self.cp_id}, key v{self.key_version})" if self.cp_id else ""
        return f"{self.kind.words}{who}"


class CpTopicCodec:
    """How one party writes and reads Kafka record values: sealed on `cp-events`/`cp-commands`,
    plain JSON elsewhere. One per process (Central for every CP; an Engine for its own).

    `encrypt=False` is the benchmark's comparison mode only: plain records both ways."""

    def __init__(
        self,
        ring: KeyRing,
        *,
        encrypt: bool = True,
        on_used: Callable[[str, int, list[int]], None] | None = None,
        hold_without_key: bool = True,
    ) -> None:
        """`on_used(cp_id, version, retired)`: a record sealed with `version` was accepted and
        the `retired` older versions are gone (Central deletes them from the database).
        `hold_without_key`: a record to seal for a CP without a key waits for one (an Engine:
        its events wait for the Monitor's handover); False: it is not sent (Central's commands
        to a CP that is not authenticated)."""
        self.ring = ring
        self.encrypt = encrypt
        self.hold_without_key = hold_without_key
        self.sender = Sender()
        self.guard = ReplayGuard()
        self._on_used = on_used
        self._last_used: dict[str, int] = {}
        self._delivered: dict[tuple[str, int], int] = {}  # highest accepted offset per partition
        self._aad: dict[str, bytes] = {}  # the associated data's prefix per topic

    # --- writing ------------------------------------------------------------------------

    def encode(self, event: Event) -> bytes:
        """The record value; KeyUnavailable when the event must be sealed and no key is held."""
        if not self.encrypt or event.TOPIC.base not in SEALED_TOPICS:
            return event.to_bytes()
        key = self.ring.current(event.key())
        if key is None:
            raise KeyUnavailable(event.key())
        return seal(event, key, self.sender)

    def not_to_send(self, event: Event) -> bool:
        """True when the event must be sealed, no key is held and this party does not wait for
        one (`hold_without_key=False`): the publisher then does not send it."""
        return (
            not self.hold_without_key
            and self.encrypt
            and event.TOPIC.base in SEALED_TOPICS
            and self.ring.current(event.key()) is None
        )

    async def key_for(self, event: Event) -> None:
        """Returns once `encode(event)` will not raise KeyUnavailable."""
        if self.encrypt and event.TOPIC.base in SEALED_TOPICS:
            await self.ring.wait_for(event.key())

    # --- reading ------------------------------------------------------------------------

    def decode(
        self,
        topic_base: str,
        value: bytes | None,
        *,
        record_key: bytes | None = None,
        partition: int = 0,
        offset: int = -1,
    ) -> Event | None:
        """The event in a record; None for a record this process already accepted (a Kafka
        redelivery: skip it quietly). BadEvent for a malformed plain record; RecordRejected for
        one dropped by the rules of sealed topics."""
        if topic_base not in SEALED_TOPICS or not self.encrypt:
            return parse_event(value)
        if not is_sealed(value):
            raise RecordRejected(RejectKind.NOT_SEALED, _text(record_key))
        assert value is not None
        spot = (topic_base, partition)
        if offset >= 0 and offset <= self._delivered.get(spot, -1):
            return None
        event, cp_id, version = self._open(topic_base, value, record_key)
        if offset >= 0:
            self._delivered[spot] = offset
        if self._last_used.get(cp_id) != version:
            self._used(cp_id, version)
        return event

    def open(
        self, topic_base: str, value: bytes, *, record_key: bytes | None = None
    ) -> tuple[Event, SealedHeader]:
        """Checks and decrypts one sealed record (and remembers it against replays).
        RecordRejected when it is not what it claims; BadEvent when it is, but its content is
        not a valid event (the CP's own mistake: dropped and logged like any malformed event)."""
        event, cp_id, version = self._open(topic_base, value, record_key)
        return event, SealedHeader(cp_id, version, split_fields(value)[2])

    def _open(
        self, topic_base: str, value: bytes, record_key: bytes | None
    ) -> tuple[Event, str, int]:
        try:
            cp_id, version, nonce, end = split_fields(value)
        except SealedFormatError:
            raise RecordRejected(RejectKind.MALFORMED, _text(record_key)) from None
        if record_key is not None and record_key != value[FIXED_SIZE:end]:
            raise RecordRejected(RejectKind.MISROUTED, cp_id, version)
        keys = self.ring._keys.get(cp_id)  # the ring's own lookup, inlined
        key = keys.get(version) if keys else None
        if key is None:
            if self.ring.retired(cp_id, version):
                raise RecordRejected(RejectKind.OLD_KEY, cp_id, version)
            if self.ring.current(cp_id) is None:
                raise RecordRejected(RejectKind.NO_KEY, cp_id, version)
            raise RecordRejected(RejectKind.UNKNOWN_KEY, cp_id, version)
        prefix = self._aad.get(topic_base)
        if prefix is None:
            prefix = self._aad[topic_base] = aad_prefix(topic_base)
        try:
            plain = key.aead.decrypt(nonce, value[end:], prefix + value[:end])
        except InvalidTag:
            raise RecordRejected(RejectKind.FORGED, cp_id, version) from None
        try:
            event = parse_event(plain)
        except BadEvent as exc:  # sealed with the CP's key: the CP's own mistake, said as such
            raise BadEvent(f"{exc.reason} (sealed by cp {cp_id}, key v{version})") from None
        # every event of the sealed topics names its CP in `cp_id` (its key field)
        if event.TOPIC.base != topic_base or getattr(event, "cp_id", None) != cp_id:
            raise RecordRejected(RejectKind.MISROUTED, cp_id, version)
        if not self.guard.fresh_nonce(cp_id, version, nonce):
            raise RecordRejected(RejectKind.REPLAYED, cp_id, version)
        return event, cp_id, version

    def _used(self, cp_id: str, version: int) -> None:
        self._last_used[cp_id] = version
        retired = self.ring.used(cp_id, version)
        self.guard.forget(cp_id, retired)
        if self._on_used is not None:
            self._on_used(cp_id, version, retired)

    def revoked(self, cp_id: str) -> list[int]:
        """Central's "restaurar claves": every key of the CP dropped; returns their versions."""
        versions = self.ring.drop(cp_id)
        self.guard.forget(cp_id, versions)
        self._last_used.pop(cp_id, None)
        return versions


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return raw.decode("utf-8", "replace")[:40]


# --- handing a key over: Central -> Monitor (AUTH_OK), Monitor -> Engine (KEY) ----------------


class Exchange:
    """One side's ephemeral X25519 key for one handover (used once, then dropped)."""

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()
        self.public = b64(self._private.public_key().public_bytes_raw())

    def shared(self, peer_public: str) -> bytes:
        try:
            peer = X25519PublicKey.from_public_bytes(unb64(peer_public))
            return self._private.exchange(peer)
        except ValueError as exc:
            raise GrantError(f"bad exchange key ({exc})") from None


class GrantError(ValueError):
    """A key handover that does not verify (wrong signature, altered, malformed)."""


_PUBLIC = re.compile(r"[A-Za-z0-9_-]{43}")


def valid_public(text: str) -> bool:
    """An X25519 public key as sent on the sockets (32 bytes, base64url)."""
    return bool(_PUBLIC.fullmatch(text))


def grant_message(auth_message: bytes, version: int, central_public: str) -> bytes:
    """What Central's AUTH_OK signature covers when it hands a key: the SCRAM auth message (CP,
    nonces, the Monitor's exchange key), the key version and Central's exchange key."""
    return auth_message + f",k={version},y={central_public}".encode()


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """The fields of AUTH_OK#cp#signature#version#central_public#wrapped."""

    signature: str
    version: str
    central_public: str
    wrapped: str

    def fields(self) -> tuple[str, str, str, str]:
        return (self.signature, self.version, self.central_public, self.wrapped)


def _kek(shared: bytes, client_key: bytes, info: bytes) -> bytes:
    hkdf = HKDF(hashes.SHA256(), length=32, salt=b"evcharging/cp-key-wrap/1", info=info)
    return hkdf.derive(shared + client_key)


def grant_key(
    key: CpKey, *, auth_message: bytes, client_key: bytes, server_key: bytes, monitor_public: str
) -> KeyGrant:
    """Central's AUTH_OK for a right proof: `key` wrapped for this exchange, and the signature."""
    exchange = Exchange()
    message = grant_message(auth_message, key.version, exchange.public)
    kek = _kek(exchange.shared(monitor_public), client_key, message)
    nonce = os.urandom(WRAP_NONCE)
    wrapped = nonce + AESGCM(kek).encrypt(nonce, key.secret, message)
    signature = server_signature(server_key, message)
    return KeyGrant(b64(signature), str(key.version), exchange.public, b64(wrapped))


def open_grant(
    cp_id: str,
    grant: KeyGrant,
    *,
    exchange: Exchange,
    auth_message: bytes,
    keys: ClientKeys,
) -> CpKey:
    """The Monitor's side: Central's signature checked, then the key unwrapped; GrantError else.
    `keys`: what the Monitor derived from its secret for this exchange (`Prover.answer`)."""
    try:
        version = int(grant.version)
        signature = unb64(grant.signature)
        wrapped = unb64(grant.wrapped)
    except ValueError:
        raise GrantError("malformed key grant") from None
    if version < 1 or not valid_public(grant.central_public):
        raise GrantError("malformed key grant")
    message = grant_message(auth_message, version, grant.central_public)
    if not signature_matches(keys, message, signature):
        raise GrantError("could not prove it knows this CP (wrong server signature)")
    kek = _kek(exchange.shared(grant.central_public), keys.client_key, message)
    try:
        secret = AESGCM(kek).decrypt(wrapped[:WRAP_NONCE], wrapped[WRAP_NONCE:], message)
    except (InvalidTag, ValueError):
        raise GrantError("the wrapped key does not verify") from None
    return CpKey(cp_id, version, secret)


def _handover_kek(shared: bytes, monitor_public: str, engine_public: str, cp_id: str) -> bytes:
    info = f"evcharging/engine-handover/1|{cp_id}|{monitor_public}|{engine_public}".encode()
    return HKDF(hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def handover_wrap(key: CpKey, exchange: Exchange, engine_public: str) -> str:
    """The Monitor wraps the CP key for its Engine (KEY#cp#version#wrapped)."""
    kek = _handover_kek(exchange.shared(engine_public), exchange.public, engine_public, key.cp_id)
    nonce = os.urandom(WRAP_NONCE)
    aad = f"{key.cp_id}|{key.version}".encode()
    return b64(nonce + AESGCM(kek).encrypt(nonce, key.secret, aad))


def handover_unwrap(
    cp_id: str, version: int, wrapped: str, exchange: Exchange, monitor_public: str
) -> CpKey:
    """The Engine's side of KEY: GrantError when it does not verify."""
    kek = _handover_kek(exchange.shared(monitor_public), monitor_public, exchange.public, cp_id)
    try:
        raw = unb64(wrapped)
        secret = AESGCM(kek).decrypt(
            raw[:WRAP_NONCE], raw[WRAP_NONCE:], f"{cp_id}|{version}".encode()
        )
    except (InvalidTag, ValueError):
        raise GrantError("the handed-over key does not verify") from None
    return CpKey(cp_id, version, secret)


# --- keys at rest (Central) ----------------------------------------------------------------


class MasterKey:
    """The key that seals CP keys in Central's database (AES-256-GCM, CP id and version as
    associated data, so a row copied to another CP or version does not open)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != KEY_BYTES:
            raise ValueError("the master key is 32 bytes")
        self._aead = AESGCM(secret)

    @staticmethod
    def generate() -> bytes:
        return AESGCM.generate_key(bit_length=256)

    def __repr__(self) -> str:
        return "MasterKey(...)"

    def seal_key(self, key: CpKey) -> str:
        nonce = os.urandom(WRAP_NONCE)
        aad = f"cp-key|{key.cp_id}|{key.version}".encode()
        return base64.b64encode(nonce + self._aead.encrypt(nonce, key.secret, aad)).decode()

    def open_key(self, cp_id: str, version: int, sealed: str) -> CpKey:
        """ValueError when the row does not open (another master key, or tampered)."""
        try:
            raw = base64.b64decode(sealed, validate=True)
            aad = f"cp-key|{cp_id}|{version}".encode()
            secret = self._aead.decrypt(raw[:WRAP_NONCE], raw[WRAP_NONCE:], aad)
        except (InvalidTag, ValueError):
            raise ValueError(f"the stored key of CP {cp_id} v{version} does not open") from None
        return CpKey(cp_id, version, secret)
