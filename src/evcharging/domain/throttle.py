"""Slowing down guessers: after a few failures, a key (a CP id, an IP) must wait, doubling.

Pure and clocked from outside (seconds from any monotonic clock), so it is unit-tested without
sleeping.  Used by Central's socket authentication and by the Registry, each with two keys per
attempt ("cp:<id>" and "ip:<address>"): an attempt waits for the longer of the two.  Only
failures count; a success clears the CP's key (not the IP's: one good CP behind an address does
not forgive the guesses made from it).

An address gets more free failures than a CP id (`free_per_address`): one host often runs many
CPs (the statement's PC2), and one CP with a stale secret must not slow its neighbours' logins;
a guesser trying many ids from one address is still slowed after that many.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class _Record:
    failures: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


@dataclass
class FailureThrottle:
    free: int = 3  # failures allowed before any wait (per CP id, and any other key)
    free_per_address: int = 20  # the same for "ip:" keys
    first: float = 1.0  # the first wait, in seconds; each further failure doubles it
    cap: float = 60.0  # the longest wait
    forget_after: float = 900.0  # a key quiet this long starts afresh
    _keys: dict[str, _Record] = field(default_factory=dict)

    def wait(self, keys: tuple[str, ...], now: float) -> float:
        """Seconds the attempt must still wait (0: go ahead)."""
        longest = 0.0
        for key in keys:
            record = self._keys.get(key)
            if record is not None:
                longest = max(longest, record.blocked_until - now)
        return max(0.0, longest)

    def failed(self, keys: tuple[str, ...], now: float) -> float:
        """Counts one failure for each key; returns the wait it imposes from now on."""
        self._forget(now)
        longest = 0.0
        for key in keys:
            record = self._keys.setdefault(key, _Record())
            record.failures += 1
            record.last = now
            over = record.failures - (self.free_per_address if key.startswith("ip:") else self.free)
            if over > 0:
                delay = min(self.cap, self.first * 2 ** (over - 1))
                record.blocked_until = now + delay
                longest = max(longest, delay)
        return longest

    def succeeded(self, key: str) -> None:
        self._keys.pop(key, None)

    def failures(self, key: str) -> int:
        record = self._keys.get(key)
        return 0 if record is None else record.failures

    def _forget(self, now: float) -> None:
        if len(self._keys) < 1024:
            return
        stale = [k for k, r in self._keys.items() if now - r.last > self.forget_after]
        for key in stale:
            del self._keys[key]
