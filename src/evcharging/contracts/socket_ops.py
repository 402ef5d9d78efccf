"""The words of the socket protocol (docs/socket-protocol.md §3): opcodes and the fixed field values.

Why a module of its own, beside `frames`: `frames` is the codec (bytes <-> opcode and fields) and
knows no opcode; this is what the parts mean, shared by the Monitor (the requester) and by Central
and the Engine (who answer).  Every socket module names a frame part through these enums, so a
word is spelt once and a table of handlers can be checked against what the other side sends.

The members are `StrEnum`s: on the wire they are the same text as before, and a decoded
`Frame.opcode` (a `str`) compares equal and hashes the same, so it can index a table directly.
"""

from __future__ import annotations

from enum import StrEnum


class Opcode(StrEnum):
    """The first part of a frame's DATA: what the frame is."""

    # requests, Monitor -> Central
    AUTH = "AUTH"  # AUTH#cp_id#engine_state#reason#client_nonce#exchange (SCRAM + X25519)
    PROOF = "PROOF"  # PROOF#cp_id#client_proof (answers CHALLENGE; services.cp_auth)
    HB = "HB"  # HB#cp_id#engine_state
    FAULT = "FAULT"  # FAULT#cp_id#reason
    RECOVER = "RECOVER"  # RECOVER#cp_id
    # requests, Monitor -> Engine
    HEALTH = "HEALTH"  # HEALTH
    SET_CP = "SET_CP"  # SET_CP#cp_id
    CENTRAL = "CENTRAL"  # CENTRAL#UP | CENTRAL#DOWN
    KEYX = "KEYX"  # KEYX#monitor_exchange -> OK#engine_exchange (X25519 for the handover)
    KEY = "KEY"  # KEY#cp_id#key_version#wrapped: the CP key, wrapped for this exchange
    KEY_DROP = "KEY_DROP"  # KEY_DROP#cp_id: Central revoked the CP's keys
    # answers
    OK = "OK"
    KO = "KO"  # KO#reason: the Engine's answer to HEALTH when it is not well
    ERR = "ERR"  # ERR#reason: a refusal (see ErrReason)
    CHALLENGE = "CHALLENGE"  # CHALLENGE#salt#scrypt_n#scrypt_r#scrypt_p#nonce: Central's to AUTH
    AUTH_OK = "AUTH_OK"  # AUTH_OK#cp_id#signature#key_version#central_exchange#wrapped_key
    AUTH_DENIED = "AUTH_DENIED"  # AUTH_DENIED#reason


TO_CENTRAL: frozenset[Opcode] = frozenset(
    {Opcode.AUTH, Opcode.PROOF, Opcode.HB, Opcode.FAULT, Opcode.RECOVER}
)
"""The requests a Monitor sends Central (Central's handler table answers exactly these)."""

TO_ENGINE: frozenset[Opcode] = frozenset(
    {Opcode.HEALTH, Opcode.SET_CP, Opcode.CENTRAL, Opcode.KEYX, Opcode.KEY, Opcode.KEY_DROP}
)
"""The requests a Monitor sends its Engine (the Engine's handler table answers exactly these)."""


class EngineState(StrEnum):
    """The `engine_state` field of AUTH and HB: the Engine's health as the Monitor knows it."""

    OK = "OK"
    KO = "KO"


class CentralState(StrEnum):
    """The field of CENTRAL#...: whether the Monitor is in touch with Central."""

    UP = "UP"
    DOWN = "DOWN"


class ErrReason(StrEnum):
    """The fixed reasons of ERR#reason (other refusals carry a short human text)."""

    NOT_AUTHENTICATED = "not_authenticated"
    UNKNOWN_OPCODE = "unknown_opcode"
    KEYS_REVOKED = "keys_revoked"  # HB answer: Central revoked the CP's keys (re-auth by hand)
    REKEY = "rekey"  # HB answer: authenticate again now for a new key (rotation of all keys)
