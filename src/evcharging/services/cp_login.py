"""Central's side of a CP's login on the Monitor socket: who may try, and whether the proof is right.

Why a service of its own: the socket adapter only moves frames; the decisions (is the CP
registered, is this CP or this address throttled, is the proof right) and their audit rows live
here, testable without a socket.  The cryptography is `cp_auth`'s (SCRAM with scrypt): Central
reads the CP's verifier from the database (shared with the Registry, so a CP registered after
Central started is found) and checks the proof with two HMACs and a hash; it never hashes slowly.

The AUTH also carries the Monitor's ephemeral X25519 key (`cp_keys.Exchange`): it is bound into the
auth message both proofs sign, and the CP key of AUTH_OK is wrapped for it.  A malformed or
unusable one is refused here, at AUTH, like a malformed nonce (not counted by the throttle).

Brute force: a `FailureThrottle` keyed "cp:<id>" and "ip:<address>".  A throttled AUTH is refused
unheard; a wrong proof counts as a failure for both keys; a right one clears the CP's key.  An
AUTH for a CP without credentials is refused and audited, but not counted (it proves nothing
wrong about a secret, and a deregistered CP retrying must keep hearing why it is refused).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.contracts.fields import is_valid_id
from evcharging.domain.throttle import FailureThrottle
from evcharging.services.audit import Audit, ip_of
from evcharging.services.cp_auth import Challenge, Verifier
from evcharging.services.cp_keys import Exchange, GrantError, valid_public

NOT_REGISTERED = "not registered at the Registry"
WRONG_CREDENTIALS = "wrong credentials"
BAD_CP_ID = "malformed AUTH: not a CP id"
BAD_NONCE = "malformed AUTH: the client nonce must be 16-64 base64url characters"
BAD_EXCHANGE = (
    "malformed AUTH: the exchange key must be an X25519 public key (43 base64url characters)"
)
UNKNOWN_ACTOR = "cp:?"  # an address that has not named a valid CP

_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")


class VerifierStore(Protocol):
    """What Central reads of the credentials (the Repository is one)."""

    def get_verifier(self, cp_id: str) -> Verifier | None: ...


@dataclass(frozen=True, slots=True)
class Denied:
    """An AUTH or PROOF refused; `reason` is sent to the Monitor (AUTH_DENIED#reason)."""

    reason: str


def throttled_reason(wait: float) -> str:
    return f"too many failed attempts; try again in {max(1, math.ceil(wait))} s"


class CPLogin:
    """Central's AUTH/PROOF decisions; one per Central, shared by every Monitor link."""

    def __init__(
        self,
        repo: VerifierStore,
        audit: Audit,
        throttle: FailureThrottle | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._repo = repo
        self.audit = audit
        self.throttle = throttle if throttle is not None else FailureThrottle()
        self._clock = clock

    def begin(
        self, cp_id: str, client_nonce: str, peer: str, exchange: str = ""
    ) -> Challenge | Denied:
        """AUTH: the challenge to send (CHALLENGE#...), or why the CP may not even try.
        `exchange`: the Monitor's X25519 public key ("" when it sent none: the socket decides
        whether one is required)."""
        ip = ip_of(peer)
        if not is_valid_id(cp_id):
            return self._deny(AuditAction.AUTH_FAILED, None, ip, BAD_CP_ID)
        wait = self.throttle.wait(_keys(cp_id, ip), self._clock())
        if wait > 0:
            return self._deny(AuditAction.AUTH_THROTTLED, cp_id, ip, throttled_reason(wait))
        if not _NONCE.fullmatch(client_nonce):
            return self._deny(AuditAction.AUTH_FAILED, cp_id, ip, BAD_NONCE)
        if exchange and not usable_exchange(exchange):
            return self._deny(AuditAction.AUTH_FAILED, cp_id, ip, BAD_EXCHANGE)
        verifier = self._repo.get_verifier(cp_id)
        if verifier is None:
            return self._deny(AuditAction.AUTH_FAILED, cp_id, ip, NOT_REGISTERED)
        return Challenge.start(cp_id, client_nonce, verifier, exchange)

    def finish(self, challenge: Challenge, proof_text: str, peer: str) -> bytes | Denied:
        """PROOF: Central's signature for AUTH_OK when the proof is right; else a refusal."""
        cp_id, ip = challenge.cp_id, ip_of(peer)
        signature = challenge.check(proof_text)
        if signature is None:
            self.throttle.failed(_keys(cp_id, ip), self._clock())
            return self._deny(AuditAction.AUTH_FAILED, cp_id, ip, WRONG_CREDENTIALS)
        self.throttle.succeeded(f"cp:{cp_id}")
        self.audit.record(
            AuditAction.AUTH_OK, actor=f"cp:{cp_id}", ip=ip, cp_id=cp_id, detail="proof accepted"
        )
        return signature

    def refused(self, cp_id: str | None, reason: str, peer: str) -> Denied:
        """A login refused by the socket's own rules (PROOF without AUTH, a CP already
        connected elsewhere): audited like any failed login, not counted by the throttle."""
        cp = cp_id if cp_id is not None and is_valid_id(cp_id) else None
        return self._deny(AuditAction.AUTH_FAILED, cp, ip_of(peer), reason)

    def rejected(self, cp_id: str | None, kind: str, detail: str, peer: str) -> None:
        """A frame dropped (malformed, unknown opcode): message.rejected, no secret in it."""
        self.audit.record(
            AuditAction.MESSAGE_REJECTED,
            actor=UNKNOWN_ACTOR if cp_id is None else f"cp:{cp_id}",
            ip=ip_of(peer),
            outcome=Outcome.DENIED,
            cp_id=cp_id,
            detail=detail,
            kind=kind,
        )

    def _deny(self, action: AuditAction, cp_id: str | None, ip: str, reason: str) -> Denied:
        self.audit.record(
            action,
            actor=UNKNOWN_ACTOR if cp_id is None else f"cp:{cp_id}",
            ip=ip,
            outcome=Outcome.DENIED,
            cp_id=cp_id,
            detail=reason,
        )
        return Denied(reason)


def usable_exchange(text: str) -> bool:
    """An X25519 public key Central can wrap a CP key for: well formed (`valid_public`) and not
    one of the low-order points whose shared secret is all zeros (a trial exchange, about 50 us,
    so that a bad key is refused at AUTH, not found when the grant is made)."""
    if not valid_public(text):
        return False
    try:
        Exchange().shared(text)
    except GrantError:
        return False
    return True


def _keys(cp_id: str, ip: str) -> tuple[str, str]:
    return (f"cp:{cp_id}", f"ip:{ip}")
