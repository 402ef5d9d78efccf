"""Central's side of the per-CP keys: issue at authentication, keep at rest, revoke.

Why a service of its own: `CentralService` decides *when* (a right PROOF, an operator's
"restaurar claves"); this holds *how*: the next version from the database's counter, the key
sealed under the master key before it is stored, the ring the Kafka codec reads, and the rows of
keys retired by use or revoked deleted.  Nothing here logs or returns a key in clear except to
the socket's grant (`cp_keys.grant_key`), which wraps it at once.

`KeyedPublisher` is Central's way out to Kafka: a command for a CP that holds no key is not sent
(nothing waits for a key at Central: a refusal for a revoked CP's menu must not hold up Central's
Kafka reader, nor an admin's "stop" a request).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from evcharging.contracts.events import Event
from evcharging.contracts.sealed import SEALED_TOPICS
from evcharging.services.cp_keys import CpKey, CpTopicCodec, KeyRing, MasterKey, new_key
from evcharging.services.ports import Delivery, Publisher, StoredCpKey

log = logging.getLogger(__name__)


class KeyStore(Protocol):
    """The repository's key methods (`ports.Repository` has them)."""

    def next_key_version(self, cp_id: str) -> int: ...
    def key_versions(self) -> dict[str, int]: ...
    def save_cp_key(self, cp_id: str, version: int, sealed: str) -> None: ...
    def stored_cp_keys(self) -> list[StoredCpKey]: ...
    def delete_cp_keys(self, cp_id: str, versions: list[int] | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class KeyState:
    """What the views show of a CP's keys (never the key)."""

    version: int | None  # the key in use (the newest held); None: the CP holds no key
    issued: int  # the latest version ever issued (0: never)


class CentralKeys:
    def __init__(self, store: KeyStore, master: MasterKey, *, encrypt: bool = True) -> None:
        """`encrypt=False`: the benchmark's comparison mode (`EV_Central --cp-encryption off`):
        records travel plain both ways and Central's socket grants no key (issue 13's AUTH_OK)."""
        self._store = store
        self._master = master
        self._issued: dict[str, int] = {}
        self.codec = CpTopicCodec(KeyRing(), encrypt=encrypt, on_used=self._retired)

    @property
    def ring(self) -> KeyRing:
        return self.codec.ring

    @property
    def encrypt(self) -> bool:
        """False: the benchmark's comparison mode (no key is issued or granted; plain records)."""
        return self.codec.encrypt

    def load(self) -> int:
        """The stored keys opened into the ring; returns how many. A row that does not open
        (another master key, or tampered) is skipped and said once: its CP gets a new key at
        its next authentication."""
        self._issued = dict(self._store.key_versions())
        held: dict[str, list[int]] = {}
        unreadable = 0
        for row in self._store.stored_cp_keys():
            try:
                key = self._master.open_key(row.cp_id, row.version, row.sealed)
            except ValueError:
                unreadable += 1
                continue
            self.ring.install(key)
            held.setdefault(row.cp_id, []).append(row.version)
        for cp_id, issued in self._issued.items():
            versions = held.get(cp_id)
            self.ring.forget_floor(cp_id, min(versions) - 1 if versions else issued)
        if unreadable:
            log.warning(
                "%d stored CP keys do not open with this master key: those CPs get new keys "
                "when their Monitors authenticate again",
                unreadable,
            )
        return sum(len(v) for v in held.values())

    def issue(self, cp_id: str) -> CpKey:
        """A fresh key with the CP's next version, stored sealed, then held; older keys stay
        until the Engine uses this one (`_retired`)."""
        version = self._store.next_key_version(cp_id)
        key = new_key(cp_id, version)
        self._store.save_cp_key(cp_id, version, self._master.seal_key(key))
        self._issued[cp_id] = version
        pushed_out = self.ring.install(key)
        if pushed_out:
            self._store.delete_cp_keys(cp_id, pushed_out)
        return key

    def revoke(self, cp_id: str) -> list[int]:
        """Every key of the CP deleted (ring and database); returns their versions."""
        versions = self.codec.revoked(cp_id)
        self._store.delete_cp_keys(cp_id)
        return versions

    def state(self, cp_id: str) -> KeyState:
        current = self.ring.current(cp_id)
        return KeyState(None if current is None else current.version, self._issued.get(cp_id, 0))

    def _retired(self, cp_id: str, version: int, retired: list[int]) -> None:
        if retired:
            self._store.delete_cp_keys(cp_id, retired)
            log.info("cp=%s: key v%d in use; older keys %s deleted", cp_id, version, retired)


QUIET_FOR = 10.0  # seconds: a CP's unsent commands are logged once per this
MAX_REMEMBERED = 4096  # CPs whose last such log line is remembered


class KeyedPublisher:
    """Central's publisher: the one it wraps, except for an event on a sealed topic (a command
    to an Engine) for a CP that holds no key (revoked, or never issued): that one is not sent
    (`Delivery.NO_KEY`) and said in the log, at most once per CP per `QUIET_FOR` seconds.

    Why not wait for the key, as an Engine's outbox does: Central sends such commands from its
    Kafka reader (a refusal to a CP's menu request, which anybody can ask for on driver-events)
    and from an admin's request; waiting would hold them up until the CP authenticates again.
    Nothing is lost that matters: no Engine could read it, and a CP that authenticates again is
    told where it stands (`CentralService.issue_key`: CP_RESUME, or CP_STOP if stopped)."""

    def __init__(
        self, inner: Publisher, keys: CentralKeys, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.inner = inner
        self._keys = keys
        self._clock = clock
        self._said: dict[str, float] = {}  # CP -> when its unsent commands were last logged

    async def publish(
        self, event: Event, *, on_delivered: Callable[[], None] | None = None
    ) -> Delivery:
        if self._unreadable(event):
            return Delivery.NO_KEY
        return await self.inner.publish(event, on_delivered=on_delivered)

    async def publish_soon(self, event: Event) -> None:
        if not self._unreadable(event):
            await self.inner.publish_soon(event)

    def _unreadable(self, event: Event) -> bool:
        keys = self._keys
        if not keys.encrypt or event.TOPIC.base not in SEALED_TOPICS:
            return False
        cp_id = event.key()
        if keys.ring.current(cp_id) is not None:
            return False
        now = self._clock()
        if now >= self._said.get(cp_id, float("-inf")) + QUIET_FOR:
            if len(self._said) >= MAX_REMEMBERED:  # ids from a flood of requests: forget them
                self._said.clear()
            self._said[cp_id] = now
            log.info(
                "cp=%s holds no key: %s not sent (its Engine could not read it; the CP is told "
                "where it stands when its Monitor authenticates again)",
                cp_id,
                event.event_type,
            )
        return True
