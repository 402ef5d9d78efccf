"""Central's AUTH/PROOF decisions (services.cp_login): registration, proof, throttle, audit rows."""

from __future__ import annotations

from decimal import Decimal

import pytest

from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.domain.throttle import FailureThrottle
from evcharging.services.audit import Audit, AuditEntry, AuditQuery
from evcharging.services.cp_auth import (
    Challenge,
    Prover,
    b64,
    make_verifier,
    new_nonce,
    signature_matches,
)
from evcharging.services.cp_keys import Exchange
from evcharging.services.cp_login import CPLogin, Denied
from tests.support.clock import Clock

SECRET = "the-right-secret-for-CP1"
PEER = "10.0.0.7:51234"
FAST_N = 2**10  # unit tests only: the production cost is cp_auth.SCRYPT_N


@pytest.fixture
def repo() -> SqliteRepository:
    repo = SqliteRepository(":memory:")
    repo.enrol_cp("CP1", "Alicante", Decimal("0.35"), make_verifier(SECRET, n=FAST_N))
    repo.enrol_cp("CP2", "Valencia", Decimal("0.40"), make_verifier("CP2's secret", n=FAST_N))
    return repo


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def login(repo: SqliteRepository, clock: Clock) -> CPLogin:
    return CPLogin(
        repo, Audit([repo]), FailureThrottle(free=2, free_per_address=2, first=1.0, cap=8.0), clock
    )


def rows(repo: SqliteRepository) -> list[AuditEntry]:
    return list(reversed(repo.find_audit(AuditQuery())))


def attempt(login: CPLogin, cp_id: str, secret: str, peer: str = PEER) -> bytes | Denied:
    client_nonce = new_nonce()
    challenge = login.begin(cp_id, client_nonce, peer)
    if isinstance(challenge, Denied):
        return challenge
    kdf = challenge.verifier.kdf
    proof, _, _ = Prover(cp_id, secret).answer(
        client_nonce, b64(kdf.salt), str(kdf.n), str(kdf.r), str(kdf.p), challenge.nonce
    )
    return login.finish(challenge, proof, peer)


def test_the_right_secret_is_accepted_and_central_proves_itself_too(
    login: CPLogin, repo: SqliteRepository
) -> None:
    client_nonce = new_nonce()
    challenge = login.begin("CP1", client_nonce, PEER)
    assert isinstance(challenge, Challenge)
    assert challenge.nonce.startswith(client_nonce)
    assert challenge.nonce != client_nonce
    kdf = challenge.verifier.kdf
    prover = Prover("CP1", SECRET)
    proof, message, keys = prover.answer(
        client_nonce, b64(kdf.salt), str(kdf.n), str(kdf.r), str(kdf.p), challenge.nonce
    )
    signature = login.finish(challenge, proof, PEER)
    assert isinstance(signature, bytes)
    assert signature_matches(keys, message, signature)
    [row] = rows(repo)
    assert (row.action, row.actor, row.ip, row.outcome, row.cp_id) == (
        AuditAction.AUTH_OK,
        "cp:CP1",
        "10.0.0.7",
        Outcome.OK,
        "CP1",
    )


def test_a_wrong_secret_is_refused_audited_and_counted(
    login: CPLogin, repo: SqliteRepository
) -> None:
    assert attempt(login, "CP1", "a guess") == Denied("wrong credentials")
    [row] = rows(repo)
    assert (row.action, row.actor, row.ip, row.outcome, row.cp_id, row.detail) == (
        AuditAction.AUTH_FAILED,
        "cp:CP1",
        "10.0.0.7",
        Outcome.DENIED,
        "CP1",
        "wrong credentials",
    )
    assert login.throttle.failures("cp:CP1") == login.throttle.failures("ip:10.0.0.7") == 1


@pytest.mark.parametrize("setup", ["never", "deregistered"])
def test_a_cp_without_credentials_is_told_to_register(
    login: CPLogin, repo: SqliteRepository, setup: str
) -> None:
    cp_id = "CP9" if setup == "never" else "CP1"
    if setup == "deregistered":
        assert repo.deregister_cp("CP1")
    assert login.begin(cp_id, new_nonce(), PEER) == Denied("not registered at the Registry")
    [row] = rows(repo)
    assert (row.action, row.cp_id, row.ip, row.detail) == (
        AuditAction.AUTH_FAILED,
        cp_id,
        "10.0.0.7",
        "not registered at the Registry",
    )
    assert login.throttle.failures(f"cp:{cp_id}") == 0  # not a guess at a secret


def test_a_rotated_secret_makes_the_old_one_wrong(login: CPLogin, repo: SqliteRepository) -> None:
    assert repo.rotate_credentials("CP1", make_verifier("the new one", n=FAST_N))
    assert attempt(login, "CP1", SECRET) == Denied("wrong credentials")
    assert isinstance(attempt(login, "CP1", "the new one"), bytes)


def test_after_the_free_failures_a_cp_is_refused_unheard_until_its_wait_is_over(
    login: CPLogin, repo: SqliteRepository, clock: Clock
) -> None:
    for _ in range(3):  # two free, the third imposes 1 s
        assert attempt(login, "CP1", "guess", peer=f"10.0.1.{_}:1") == Denied("wrong credentials")
    refused = attempt(login, "CP1", SECRET, peer="10.0.9.9:1")  # even the right secret
    assert refused == Denied("too many failed attempts; try again in 1 s")
    assert rows(repo)[-1].action is AuditAction.AUTH_THROTTLED
    assert rows(repo)[-1].ip == "10.0.9.9"
    clock.now += 1.0
    assert isinstance(attempt(login, "CP1", SECRET, peer="10.0.9.9:1"), bytes)
    assert login.throttle.failures("cp:CP1") == 0  # a success clears the CP's key


def test_guesses_from_one_address_at_many_cps_throttle_that_address(
    login: CPLogin, repo: SqliteRepository, clock: Clock
) -> None:
    for cp_id in ("CP1", "CP2", "CP1"):
        assert attempt(login, cp_id, "guess") == Denied("wrong credentials")
    assert attempt(login, "CP2", "CP2's secret") == Denied(
        "too many failed attempts; try again in 1 s"
    )
    assert isinstance(attempt(login, "CP2", "CP2's secret", peer="10.0.0.8:1"), bytes)
    clock.now += 1.0
    assert isinstance(attempt(login, "CP2", "CP2's secret"), bytes)
    assert attempt(login, "CP2", "guess") == Denied("wrong credentials")
    # CP2's success cleared CP2's key, not the address's: its next wait doubled
    assert login.throttle.failures("cp:CP2") == 1
    assert attempt(login, "CP2", "CP2's secret") == Denied(
        "too many failed attempts; try again in 2 s"
    )


@pytest.mark.parametrize(
    ("cp_id", "nonce", "reason"),
    [
        ("CP 1", "A" * 24, "malformed AUTH: not a CP id"),
        ("", "A" * 24, "malformed AUTH: not a CP id"),
        ("CP1", "", "malformed AUTH: the client nonce must be 16-64 base64url characters"),
        ("CP1", "short", "malformed AUTH: the client nonce must be 16-64 base64url characters"),
        ("CP1", "x" * 65, "malformed AUTH: the client nonce must be 16-64 base64url characters"),
        ("CP1", "a,b=c" * 5, "malformed AUTH: the client nonce must be 16-64 base64url characters"),
    ],
)
def test_malformed_auth_is_refused_and_audited(
    login: CPLogin, repo: SqliteRepository, cp_id: str, nonce: str, reason: str
) -> None:
    assert login.begin(cp_id, nonce, PEER) == Denied(reason)
    [row] = rows(repo)
    assert (row.action, row.detail, row.ip) == (AuditAction.AUTH_FAILED, reason, "10.0.0.7")
    assert row.cp_id == (cp_id if cp_id == "CP1" else None)


BAD_EXCHANGE = (
    "malformed AUTH: the exchange key must be an X25519 public key (43 base64url characters)"
)


def test_the_monitors_exchange_key_is_bound_into_what_both_proofs_sign(
    login: CPLogin, repo: SqliteRepository
) -> None:
    """The CP key of AUTH_OK is wrapped for this X25519 key: a man in the middle cannot swap
    his own in without breaking the Monitor's proof."""
    client_nonce, exchange = new_nonce(), Exchange().public
    challenge = login.begin("CP1", client_nonce, PEER, exchange)
    assert isinstance(challenge, Challenge)
    assert challenge.exchange == exchange
    assert challenge.message.endswith(f",x={exchange}".encode())
    kdf = challenge.verifier.kdf
    salt = b64(kdf.salt)
    prover = Prover("CP1", SECRET)
    swapped, _, _ = prover.answer(
        client_nonce, salt, str(kdf.n), str(kdf.r), str(kdf.p), challenge.nonce
    )
    assert login.finish(challenge, swapped, PEER) == Denied("wrong credentials")
    challenge = login.begin("CP1", client_nonce, PEER, exchange)
    assert isinstance(challenge, Challenge)
    proof, _, _ = prover.answer(
        client_nonce, salt, str(kdf.n), str(kdf.r), str(kdf.p), challenge.nonce, exchange
    )
    assert isinstance(login.finish(challenge, proof, PEER), bytes)
    assert challenge.client_key(proof) is not None


@pytest.mark.parametrize(
    "exchange",
    [
        "short",
        "A" * 44,
        "A" * 42 + "=",
        ("a+b/" * 11)[:43],
        b64(bytes(32)),
        b64(bytes([1]) + bytes(31)),
    ],
    ids=["short", "long", "padded", "not-url-safe", "zero-point", "low-order-point"],
)
def test_an_unusable_exchange_key_is_refused_at_auth_audited_and_not_counted(
    login: CPLogin, repo: SqliteRepository, exchange: str
) -> None:
    assert login.begin("CP1", new_nonce(), PEER, exchange) == Denied(BAD_EXCHANGE)
    [row] = rows(repo)
    assert (row.action, row.cp_id, row.ip, row.detail) == (
        AuditAction.AUTH_FAILED,
        "CP1",
        "10.0.0.7",
        BAD_EXCHANGE,
    )
    assert login.throttle.failures("cp:CP1") == 0  # a malformed AUTH is no guess at a secret


def test_no_secret_proof_or_key_is_written_to_the_audit_log(
    login: CPLogin, repo: SqliteRepository
) -> None:
    client_nonce = new_nonce()
    challenge = login.begin("CP1", client_nonce, PEER)
    assert isinstance(challenge, Challenge)
    kdf = challenge.verifier.kdf
    proof, _, _ = Prover("CP1", SECRET).answer(
        client_nonce, b64(kdf.salt), str(kdf.n), str(kdf.r), str(kdf.p), challenge.nonce
    )
    signature = login.finish(challenge, proof, PEER)
    assert isinstance(signature, bytes)
    attempt(login, "CP1", "wrong one")
    text = repr(rows(repo))
    for secret in (
        SECRET,
        "wrong one",
        proof,
        b64(signature),
        b64(challenge.verifier.stored_key),
        b64(challenge.verifier.server_key),
    ):
        assert secret not in text
