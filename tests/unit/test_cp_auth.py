"""The SCRAM exchange of services.cp_auth: both sides, what each refuses, what a capture is worth."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evcharging.contracts.frames import reserved_char
from evcharging.services.cp_auth import (
    MAX_SCRYPT_N,
    SCRYPT_N,
    Challenge,
    ChallengeError,
    ClientKeys,
    Prover,
    Verifier,
    auth_message,
    b64,
    client_proof,
    make_verifier,
    new_nonce,
    new_secret,
    secret_matches,
    signature_matches,
    unb64,
)

FAST_N = 2**10  # the exchange does not depend on the cost; the production one is tested once


@pytest.fixture(scope="module")
def secret() -> str:
    return new_secret()


@pytest.fixture(scope="module")
def verifier(secret: str) -> Verifier:
    return make_verifier(secret, n=FAST_N)


def challenge_fields(challenge: Challenge) -> tuple[str, str, str, str, str]:
    """CHALLENGE#salt#n#r#p#nonce, as Central sends it."""
    kdf = challenge.verifier.kdf
    return (b64(kdf.salt), str(kdf.n), str(kdf.r), str(kdf.p), challenge.nonce)


def exchange(prover: Prover, verifier: Verifier) -> tuple[Challenge, str, bytes | None, bool]:
    """One whole exchange: (Central's challenge, the proof sent, Central's answer, whether the
    Monitor accepted Central's signature)."""
    client_nonce = new_nonce()
    challenge = Challenge.start(prover.cp_id, client_nonce, verifier)
    proof, message, keys = prover.answer(client_nonce, *challenge_fields(challenge))
    signature = challenge.check(proof)
    accepted = signature is not None and signature_matches(keys, message, signature)
    return challenge, proof, signature, accepted


def test_the_right_secret_completes_the_exchange_both_ways(secret: str, verifier: Verifier) -> None:
    _, proof, signature, accepted = exchange(Prover("CP1", secret), verifier)
    assert signature is not None
    assert accepted
    assert reserved_char(proof) is None  # fits a frame field as it is


def test_the_default_cost_works_end_to_end() -> None:
    """The production cost (and the only slow test here): what the Monitor pays once."""
    secret = new_secret()
    verifier = make_verifier(secret)
    assert verifier.kdf.n == SCRYPT_N
    assert exchange(Prover("CP1", secret), verifier)[3]


@pytest.mark.parametrize("wrong", ["", "x", "a guess", "SECRET"])
def test_a_wrong_secret_gets_no_signature(secret: str, verifier: Verifier, wrong: str) -> None:
    assert exchange(Prover("CP1", wrong or secret.upper()), verifier)[2] is None


def test_the_proof_is_bound_to_the_cp(secret: str, verifier: Verifier) -> None:
    """CP2 cannot log in with CP1's secret even if its verifier were CP1's: the CP is signed."""
    client_nonce = new_nonce()
    challenge = Challenge.start("CP1", client_nonce, verifier)
    proof, _, _ = Prover("CP2", secret).answer(client_nonce, *challenge_fields(challenge))
    assert challenge.check(proof) is None


def test_a_captured_proof_is_worthless_for_the_next_challenge(
    secret: str, verifier: Verifier
) -> None:
    client_nonce = new_nonce()
    first = Challenge.start("CP1", client_nonce, verifier)
    proof, _, _ = Prover("CP1", secret).answer(client_nonce, *challenge_fields(first))
    assert first.check(proof) is not None
    again = Challenge.start("CP1", client_nonce, verifier)  # even with the same client nonce
    assert again.nonce != first.nonce
    assert again.check(proof) is None


def test_a_stolen_verifier_does_not_answer_a_challenge(verifier: Verifier) -> None:
    """What the database holds (salt, stored key, server key) cannot make a proof: the proof
    needs the client key, of which the database has only the hash."""
    client_nonce = new_nonce()
    challenge = Challenge.start("CP1", client_nonce, verifier)
    message = challenge.message
    for guess in (verifier.stored_key, verifier.server_key):
        forged = ClientKeys(client_key=guess, server_key=verifier.server_key)
        assert challenge.check(b64(client_proof(forged, message))) is None


@pytest.mark.parametrize("part", ["salt", "nonce", "n"])
def test_a_challenge_tampered_on_the_way_fails_at_central(
    secret: str, verifier: Verifier, part: str
) -> None:
    """A man in the middle that changes the salt, the cost or Central's nonce makes the
    Monitor sign another message: Central refuses the proof (and the Monitor never sees a good
    signature)."""
    client_nonce = new_nonce()
    challenge = Challenge.start("CP1", client_nonce, verifier)
    salt, n, r, p, nonce = challenge_fields(challenge)
    if part == "salt":
        salt = b64(bytes(16))
    elif part == "nonce":
        nonce = client_nonce + new_nonce()
    else:
        n = str(FAST_N * 2)
    proof, _, _ = Prover("CP1", secret).answer(client_nonce, salt, n, r, p, nonce)
    assert challenge.check(proof) is None


def test_a_forged_server_signature_is_refused(secret: str, verifier: Verifier) -> None:
    client_nonce = new_nonce()
    challenge = Challenge.start("CP1", client_nonce, verifier)
    _, message, keys = Prover("CP1", secret).answer(client_nonce, *challenge_fields(challenge))
    impostor = make_verifier("not the secret", n=FAST_N)
    for signature in (bytes(32), b"", impostor.server_key):
        assert not signature_matches(keys, message, signature)


@pytest.mark.parametrize(
    ("nonce", "fields", "said"),
    [
        ("other", None, "does not answer our nonce"),
        ("same", None, "does not answer our nonce"),
        (None, ("2097152", "8", "1"), "n=2097152"),  # 2 GiB of memory: refused
        (None, ("1000", "8", "1"), "n=1000"),  # not a power of two
        (None, ("1", "8", "1"), "n=1"),
        (None, ("1024", "0", "1"), "r=0"),
        (None, ("1024", "33", "1"), "r=33"),
        (None, ("1024", "8", "0"), "p=0"),
        (None, ("1024", "8", "17"), "p=17"),
        (None, ("lots", "8", "1"), "malformed"),
        (None, ("-1024", "8", "1"), "n=-1024"),
    ],
)
def test_the_monitor_refuses_a_challenge_it_should_not_answer(
    secret: str,
    verifier: Verifier,
    nonce: str | None,
    fields: tuple[str, str, str] | None,
    said: str,
) -> None:
    client_nonce = new_nonce()
    challenge = Challenge.start("CP1", client_nonce, verifier)
    salt, n, r, p, server_nonce = challenge_fields(challenge)
    if nonce == "other":
        server_nonce = new_nonce() + new_nonce()
    elif nonce == "same":
        server_nonce = client_nonce  # Central added nothing of its own
    if fields is not None:
        n, r, p = fields
    with pytest.raises(ChallengeError, match=said):
        Prover("CP1", secret).answer(client_nonce, salt, n, r, p, server_nonce)


def test_the_largest_cost_a_monitor_accepts_is_the_documented_cap() -> None:
    assert MAX_SCRYPT_N == 2**20
    assert SCRYPT_N <= MAX_SCRYPT_N


def test_a_malformed_salt_is_refused(secret: str, verifier: Verifier) -> None:
    client_nonce = new_nonce()
    challenge = Challenge.start("CP1", client_nonce, verifier)
    _, n, r, p, nonce = challenge_fields(challenge)
    with pytest.raises(ChallengeError, match="malformed"):
        Prover("CP1", secret).answer(client_nonce, "not base64!", n, r, p, nonce)


@pytest.mark.parametrize("proof", ["", "!!!!", "A", "AAAA", "A" * 43 + "=", "é" * 43])
def test_central_refuses_malformed_proofs_without_raising(verifier: Verifier, proof: str) -> None:
    assert Challenge.start("CP1", new_nonce(), verifier).check(proof) is None


def test_the_prover_stretches_once_per_salt_and_cost(secret: str, verifier: Verifier) -> None:
    prover = Prover("CP1", secret)
    for _ in range(3):
        assert exchange(prover, verifier)[3]
    assert len(prover._keys) == 1
    assert exchange(prover, make_verifier(secret, n=FAST_N))[3]  # rotated salt: stretched again
    assert len(prover._keys) == 2


def test_the_registrys_slow_check(secret: str, verifier: Verifier) -> None:
    assert secret_matches(verifier, secret)
    assert not secret_matches(verifier, secret + "x")
    assert not secret_matches(verifier, "")
    bad_cost = replace(verifier, kdf=replace(verifier.kdf, n=3))  # scrypt refuses: no crash
    assert not secret_matches(bad_cost, secret)


def test_the_auth_message_names_everything_signed() -> None:
    verifier = make_verifier("s", n=FAST_N)
    message = auth_message("CP1", "cn", "cnsn", verifier.kdf).decode()
    assert message == f"cp=CP1,r=cn,s={b64(verifier.kdf.salt)},n={FAST_N},nonce=cnsn"


def test_secrets_and_nonces_are_fresh_and_frame_safe() -> None:
    secrets_ = {new_secret() for _ in range(50)}
    nonces = {new_nonce() for _ in range(50)}
    assert len(secrets_) == len(nonces) == 50
    for text in secrets_ | nonces:
        assert reserved_char(text) is None
        assert unb64(text)  # base64url, as the AUTH client nonce must be
    assert all(len(unb64(s)) == 32 for s in secrets_)


# --- base64url, the encoding of every binary field ------------------------------------------


@given(st.binary(max_size=96))
def test_b64_round_trips_and_never_carries_a_separator_or_padding(data: bytes) -> None:
    text = b64(data)
    assert unb64(text) == data
    assert reserved_char(text) is None
    assert not set(text) & set("=+/ \n")


@pytest.mark.parametrize(
    "text",
    ["A", "AAAAA", "AA==", "ab+/", "ab/c", "AB CD", "AB\n", "é", "AB#C", "\x02AB"],
)
def test_unb64_refuses_what_b64_never_writes(text: str) -> None:
    with pytest.raises(ValueError, match="base64url"):
        unb64(text)


@pytest.mark.parametrize(("text", "data"), [("", b""), ("AA", b"\0"), ("_-8", b"\xff\xef")])
def test_unb64_edge_cases(text: str, data: bytes) -> None:
    assert unb64(text) == data
