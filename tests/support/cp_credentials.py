"""CP credentials for tests: a CP enrolled in a repository, and a Monitor's in-memory credentials.

The scrypt cost is lowered (`FAST_N`) so a test spends microseconds, not 60 ms, per verifier;
the cost travels in the CHALLENGE, so the real exchange code runs unchanged.  Production keeps
`cp_auth.SCRYPT_N`.
"""

from __future__ import annotations

from decimal import Decimal

from evcharging.services.cp_auth import Prover, make_verifier, new_secret
from evcharging.services.ports import Repository

FAST_N = 2**10


def enrol(
    repo: Repository,
    cp_id: str,
    secret: str | None = None,
    *,
    location: str = "Alicante",
    price: str = "0.40",
) -> str:
    """Register `cp_id` as the Registry would (CP row + verifier); returns its secret."""
    secret = secret or new_secret()
    assert repo.enrol_cp(cp_id, location, Decimal(price), make_verifier(secret, n=FAST_N))
    return secret


class FixedCredentials:
    """What the Monitor's credentials file gives, held in memory; `secret=None`: not registered.
    `prover()` returns the same Prover while the secret is unchanged (scrypt runs once)."""

    def __init__(self, cp_id: str, secret: str | None) -> None:
        self.cp_id = cp_id
        self.set(secret)

    def set(self, secret: str | None) -> None:
        self._prover = None if secret is None else Prover(self.cp_id, secret)

    def prover(self) -> Prover | None:
        return self._prover
