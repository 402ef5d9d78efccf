"""Central's side of the per-CP keys: issue at authentication, keep at rest, revoke.

Why a service of its own: `CentralService` decides *when* (a right PROOF, an operator's
"restaurar claves"); this holds *how*: the next version from the database's counter, the key
sealed under the master key before it is stored, the ring the Kafka codec reads, and the rows of
keys retired by use or revoked deleted.  Nothing here logs or returns a key in clear except to
the socket's grant (`cp_keys.grant_key`), which wraps it at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from evcharging.services.cp_keys import CpKey, CpTopicCodec, KeyRing, MasterKey, new_key
from evcharging.services.ports import StoredCpKey

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
        self._states: dict[str, KeyState] = {}  # what `state` said, until the CP's keys change
        self.codec = CpTopicCodec(
            KeyRing(), encrypt=encrypt, on_used=self._retired, hold_without_key=False
        )

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
        self._states.clear()
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
        self._states.pop(cp_id, None)
        self._store.save_cp_key(cp_id, version, self._master.seal_key(key))
        self._issued[cp_id] = version
        pushed_out = self.ring.install(key)
        if pushed_out:
            self._store.delete_cp_keys(cp_id, pushed_out)
        return key

    def revoke(self, cp_id: str) -> list[int]:
        """Every key of the CP deleted (ring and database); returns their versions."""
        versions = self.codec.revoked(cp_id)
        self._states.pop(cp_id, None)
        self._store.delete_cp_keys(cp_id)
        return versions

    def state(self, cp_id: str) -> KeyState:
        """Read at every view of the CP (a telemetry reading makes one): kept until it changes."""
        known = self._states.get(cp_id)
        if known is None:
            current = self.ring.current(cp_id)
            version = None if current is None else current.version
            known = self._states[cp_id] = KeyState(version, self._issued.get(cp_id, 0))
        return known

    def _retired(self, cp_id: str, version: int, retired: list[int]) -> None:
        self._states.pop(cp_id, None)
        if retired:
            self._store.delete_cp_keys(cp_id, retired)
            log.info("cp=%s: key v%d in use; older keys %s deleted", cp_id, version, retired)
