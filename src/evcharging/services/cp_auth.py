"""A CP's credentials and how it proves them to Central without the secret crossing the wire.

The Registry issues each CP a random secret once and stores only a *verifier* derived from it by
a slow hash (scrypt).  The proof on Central's socket is the SCRAM exchange (RFC 5802, the
mechanism of PostgreSQL and Kafka's SASL/SCRAM), with scrypt in place of PBKDF2:

    salted     = scrypt(secret, salt)                       (slow: the Monitor, once per process)
    client_key = HMAC(salted, "Client Key");  stored_key = SHA-256(client_key)
    server_key = HMAC(salted, "Server Key")                 (the verifier: salt, stored, server)

    Monitor -> Central   AUTH  cp, client_nonce
    Central -> Monitor   CHALLENGE  salt, scrypt cost, nonce (client_nonce + server_nonce)
    Monitor -> Central   PROOF  cp, client_key XOR HMAC(stored_key, auth_message)
    Central -> Monitor   AUTH_OK  HMAC(server_key, auth_message)  (Central proves it too)

Why this shape: the wire carries only nonces and one-time proofs (a capture replays nothing: the
next challenge has a new nonce); the database holds no secret, and a stolen verifier is not
enough to answer a challenge; Central's check is two HMACs and a hash, so a reconnection storm of
thousands of CPs costs no slow hashing at Central.  Only the Registry's own checks (re-register,
deregister, both over HTTPS) hash the secret with scrypt.  Every primitive is `cryptography`'s.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives import constant_time, hashes, hmac
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

SCRYPT_N = 2**15  # 32 MiB, ~60 ms on the reference machine: slow for a guesser, once per Monitor
SCRYPT_R = 8
SCRYPT_P = 1
SECRET_BYTES = 32  # 256 bits: not guessable, whatever the hash
NONCE_BYTES = 18
MAX_SCRYPT_N = 2**20  # a Monitor refuses to spend more than this on a challenge

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64(data: bytes) -> str:
    """URL-safe base64 without padding: no '#' or other frame separator can appear in it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    """The inverse of `b64`; ValueError on anything that is not such text (strict: the
    standard decoder would skip stray characters and take '+', '/' and padding too)."""
    if len(text) % 4 == 1 or not _B64URL.fullmatch(text):
        raise ValueError("not base64url text")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_secret() -> str:
    """A CP's secret, shown once to the CP and never stored."""
    return secrets.token_urlsafe(SECRET_BYTES)


def new_nonce() -> str:
    return secrets.token_urlsafe(NONCE_BYTES)


@dataclass(frozen=True, slots=True)
class KdfParams:
    """How the secret was stretched: sent in the challenge so the Monitor can do the same."""

    salt: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def stretch(self, secret: str) -> bytes:
        kdf = Scrypt(salt=self.salt, length=32, n=self.n, r=self.r, p=self.p)
        return kdf.derive(secret.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class Verifier:
    """What the database keeps of a CP's secret (nothing here lets anyone answer a challenge)."""

    kdf: KdfParams
    stored_key: bytes
    server_key: bytes


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """What the Monitor derives from its secret (once per challenge's salt and cost)."""

    client_key: bytes
    server_key: bytes

    @classmethod
    def derive(cls, secret: str, kdf: KdfParams) -> ClientKeys:
        salted = kdf.stretch(secret)
        return cls(_hmac(salted, b"Client Key"), _hmac(salted, b"Server Key"))

    def verifier(self, kdf: KdfParams) -> Verifier:
        return Verifier(kdf, _sha256(self.client_key), self.server_key)


def make_verifier(secret: str, *, n: int = SCRYPT_N) -> Verifier:
    """A fresh salt, the secret stretched with it, and the two keys the database keeps."""
    kdf = KdfParams(salt=secrets.token_bytes(16), n=n)
    return ClientKeys.derive(secret, kdf).verifier(kdf)


def secret_matches(verifier: Verifier, secret: str) -> bool:
    """The slow check (scrypt): the Registry's, when a CP proves itself over HTTPS."""
    try:
        keys = ClientKeys.derive(secret, verifier.kdf)
    except (InvalidKey, ValueError):
        return False
    return constant_time.bytes_eq(_sha256(keys.client_key), verifier.stored_key)


def auth_message(
    cp_id: str, client_nonce: str, nonce: str, kdf: KdfParams, exchange: str = ""
) -> bytes:
    """What both proofs sign: the CP, both nonces and the challenge (so nothing can be swapped),
    and the Monitor's ephemeral X25519 key when it sent one (`services.cp_keys`: the CP key is
    wrapped for that exchange, so a man in the middle cannot substitute his own)."""
    text = f"cp={cp_id},r={client_nonce},s={b64(kdf.salt)},n={kdf.n},nonce={nonce}"
    return (text + f",x={exchange}" if exchange else text).encode()


def client_proof(keys: ClientKeys, message: bytes) -> bytes:
    return _xor(keys.client_key, _hmac(_sha256(keys.client_key), message))


def proof_matches(verifier: Verifier, message: bytes, proof: bytes) -> bool:
    """Central's check: recover the client key from the proof and compare its hash."""
    return recovered_client_key(verifier, message, proof) is not None


def recovered_client_key(verifier: Verifier, message: bytes, proof: bytes) -> bytes | None:
    """The client key a right proof carries (both sides know it after the exchange; the CP key
    is wrapped with it, `services.cp_keys`), or None when the proof is wrong."""
    if len(proof) != len(verifier.stored_key):
        return None
    client_key = _xor(proof, _hmac(verifier.stored_key, message))
    if not constant_time.bytes_eq(_sha256(client_key), verifier.stored_key):
        return None
    return client_key


def server_signature(server_key: bytes, message: bytes) -> bytes:
    """Central's proof that it holds this CP's verifier (the Monitor checks it)."""
    return _hmac(server_key, message)


def signature_matches(keys: ClientKeys, message: bytes, signature: bytes) -> bool:
    return constant_time.bytes_eq(server_signature(keys.server_key, message), signature)


def _hmac(key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def _sha256(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


@dataclass(frozen=True, slots=True)
class Challenge:
    """One AUTH exchange as Central holds it between CHALLENGE and PROOF (per link, in memory)."""

    cp_id: str
    client_nonce: str
    nonce: str  # client_nonce + Central's own: a proof is good for this exchange only
    verifier: Verifier
    exchange: str = ""  # the Monitor's ephemeral X25519 public key (b64), if it sent one

    @classmethod
    def start(
        cls, cp_id: str, client_nonce: str, verifier: Verifier, exchange: str = ""
    ) -> Challenge:
        return cls(cp_id, client_nonce, client_nonce + new_nonce(), verifier, exchange)

    @property
    def message(self) -> bytes:
        return auth_message(
            self.cp_id, self.client_nonce, self.nonce, self.verifier.kdf, self.exchange
        )

    def check(self, proof_text: str) -> bytes | None:
        """The server signature to send back when the proof is right; None when it is not."""
        client_key = self.client_key(proof_text)
        if client_key is None:
            return None
        return server_signature(self.verifier.server_key, self.message)

    def client_key(self, proof_text: str) -> bytes | None:
        """The client key a right proof carries; None when the proof is wrong."""
        try:
            proof = unb64(proof_text)
        except ValueError:
            return None
        return recovered_client_key(self.verifier, self.message, proof)


class ChallengeError(ValueError):
    """A CHALLENGE the Monitor will not answer (not its nonce, an absurd cost, bad encoding)."""


class Prover:
    """The Monitor's side: one secret, its stretched keys cached per salt and cost."""

    def __init__(self, cp_id: str, secret: str) -> None:
        self.cp_id = cp_id
        self._secret = secret
        self._keys: dict[KdfParams, ClientKeys] = {}

    def keys(self, kdf: KdfParams) -> ClientKeys:
        if kdf not in self._keys:
            self._keys[kdf] = ClientKeys.derive(self._secret, kdf)
        return self._keys[kdf]

    def answer(
        self, client_nonce: str, salt: str, n: str, r: str, p: str, nonce: str, exchange: str = ""
    ) -> tuple[str, bytes, ClientKeys]:
        """(proof text for PROOF, the auth message, the keys to check Central's signature).
        `exchange`: the ephemeral X25519 public key (b64) this Monitor sent in its AUTH."""
        try:
            kdf = KdfParams(unb64(salt), int(n), int(r), int(p))
        except ValueError as exc:
            raise ChallengeError(f"malformed challenge: {exc}") from None
        if not nonce.startswith(client_nonce) or len(nonce) <= len(client_nonce):
            raise ChallengeError("the challenge does not answer our nonce")
        if not (2 <= kdf.n <= MAX_SCRYPT_N and kdf.n & (kdf.n - 1) == 0 and 1 <= kdf.r <= 32):
            raise ChallengeError(f"refusing a scrypt cost of n={kdf.n}, r={kdf.r}")
        if not 1 <= kdf.p <= 16:
            raise ChallengeError(f"refusing a scrypt cost of p={kdf.p}")
        keys = self.keys(kdf)
        message = auth_message(self.cp_id, client_nonce, nonce, kdf, exchange)
        return b64(client_proof(keys, message)), message, keys
