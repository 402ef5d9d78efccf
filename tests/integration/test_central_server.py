"""Central's Monitor server over real loopback TCP, with a real CentralService, CentralKeys and
CPLogin behind it: the SCRAM exchange (AUTH, CHALLENGE, PROOF, AUTH_OK) with the CP key's grant,
its refusals and audit rows, then the heartbeat protocol and its key notices."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.adapters.sockets.central_server import MonitorServer
from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.contracts.events import AuthorizationRequest, ChargingTicket, StopSupply
from evcharging.contracts.frames import ACK, NACK, Frame, FrameDecoder, encode
from evcharging.domain.throttle import FailureThrottle
from evcharging.services.audit import Audit, AuditEntry, AuditQuery
from evcharging.services.central import CentralService
from evcharging.services.central_keys import CentralKeys
from evcharging.services.cp_auth import Prover, b64, new_nonce, signature_matches, unb64
from evcharging.services.cp_keys import CpKey, Exchange, KeyGrant, MasterKey, open_grant
from evcharging.services.cp_login import CPLogin
from tests.support.builders import a_cp, a_driver, a_repo
from tests.support.clock import Clock
from tests.support.cp_credentials import enrol
from tests.support.fakes import RecordingPublisher
from tests.support.relay import relay_to
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)

WAIT = 5.0
SECRETS = {"CP1": "CP1-secret-never-on-the-wire", "CP2": "CP2-secret-never-on-the-wire"}


class Monitor:
    """A raw Monitor end: writes bytes, reads the ACK byte and the answer frame; keeps a capture
    of every byte both ways (what an eavesdropper on the link would have)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder()
        self.capture = bytearray()
        self.key: CpKey | None = None  # the CP key the last AUTH_OK handed over

    def write(self, data: bytes) -> None:
        self.capture += data
        self.writer.write(data)

    async def byte(self) -> int:
        data = await asyncio.wait_for(self.reader.readexactly(1), WAIT)
        self.capture += data
        return data[0]

    async def answer(self) -> Frame:
        while True:
            chunk = await asyncio.wait_for(self.reader.read(1), WAIT)
            assert chunk, "Central closed the link"
            self.capture += chunk
            for result in self.decoder.feed(chunk):
                assert isinstance(result, Frame), result
                return result

    async def ask(self, opcode: str, *fields: str, ack: bool = True) -> Frame:
        self.write(encode(opcode, *fields))
        assert await self.byte() == ACK
        answer = await self.answer()
        if ack:
            self.write(bytes((ACK,)))
        return answer

    async def login(
        self, cp_id: str, secret: str, *health: str, exchange: bool = True, grant: bool = True
    ) -> Frame:
        """The Monitor's half of the exchange; AUTH_OK only if Central's signature is right and
        (`grant`) it hands over a CP key that opens (`open_grant`, kept in `self.key`); without
        `grant`, issue 13's AUTH_OK#cp#signature (Central in comparison mode)."""
        state, reason = health or ("OK", "")
        client_nonce = new_nonce()
        mine = Exchange()
        public = mine.public if exchange else None
        auth = ("AUTH", cp_id, state, reason, client_nonce) + ((public,) if public else ())
        challenge = await self.ask(*auth)
        if challenge.opcode != "CHALLENGE":
            return challenge
        proof, message, keys = Prover(cp_id, secret).answer(
            client_nonce, *challenge.fields, exchange=public or ""
        )
        self.last_proof = proof
        answer = await self.ask("PROOF", cp_id, proof)
        if answer.opcode != "AUTH_OK":
            return answer
        assert answer.fields[0] == cp_id
        if not grant:
            assert len(answer.fields) == 2, answer
            assert signature_matches(keys, message, unb64(answer.fields[1])), "not Central"
            return answer
        assert len(answer.fields) == 5, answer
        self.key = open_grant(  # raises GrantError: not Central's signature, or altered
            cp_id,
            KeyGrant(*answer.fields[1:]),
            exchange=mine,
            auth_message=message,
            keys=keys,
        )
        return answer

    async def closed_by_central(self) -> bool:
        """EOF, or a reset when Central closed with our last ACK still unread."""
        try:
            data = await asyncio.wait_for(self.reader.read(100), WAIT)
        except ConnectionResetError:
            return True
        return data == b""


Connect = Callable[..., Awaitable[Monitor]]


@pytest.fixture
def repo() -> SqliteRepository:
    repo = a_repo()
    enrol(repo, "CP1", SECRETS["CP1"], price="0.35", location="Alicante")
    enrol(repo, "CP2", SECRETS["CP2"], price="0.40", location="Valencia")
    enrol(repo, "GONE", location="Elche")
    assert repo.deregister_cp("GONE")  # baja: the CP row stays, its credentials go
    a_cp(repo, "ADMIN1")  # added by an admin, never registered at the Registry
    return repo


@pytest.fixture
def encrypt() -> bool:
    """Central's mode: True as EV_Central runs; False is `--cp-encryption off` (the bench's)."""
    return True


@pytest.fixture
def keys(repo: SqliteRepository, encrypt: bool) -> CentralKeys:
    return CentralKeys(repo, MasterKey(MasterKey.generate()), encrypt=encrypt)


@pytest.fixture
async def central(repo: SqliteRepository, keys: CentralKeys) -> CentralService:
    service = CentralService(repo, RecordingPublisher(), heartbeat_timeout=0.6, keys=keys)
    await service.load()
    return service


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def login(repo: SqliteRepository, clock: Clock) -> CPLogin:
    return CPLogin(
        repo, Audit([repo]), FailureThrottle(free=2, free_per_address=2, first=1.0, cap=8.0), clock
    )


@pytest.fixture
async def server(central: CentralService, login: CPLogin) -> AsyncIterator[MonitorServer]:
    srv = MonitorServer(central, "127.0.0.1", 0, login=login, answer_timeout=0.6)
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
async def connect(server: MonitorServer) -> AsyncIterator[Connect]:
    """Open a Monitor link, from 127.0.0.1 or another loopback address (`source`)."""
    writers: list[asyncio.StreamWriter] = []

    async def open_one(source: str = "127.0.0.1") -> Monitor:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.bound_port, local_addr=(source, 0)
        )
        writers.append(writer)
        return Monitor(reader, writer)

    yield open_one
    for writer in writers:
        writer.close()


@pytest.fixture
async def monitor(connect: Connect) -> Monitor:
    return await connect()


def audit(repo: SqliteRepository, action: AuditAction | None = None) -> list[AuditEntry]:
    """The socket's rows, oldest first (a CP's state changes are the service's own rows)."""
    rows = reversed(repo.find_audit(AuditQuery(action=action, limit=500)))
    return [r for r in rows if r.action is not AuditAction.CP_STATE]


def state(central: CentralService, cp_id: str) -> str:
    return central.cp(cp_id).state.value  # type: ignore[union-attr]


# --- the exchange ----------------------------------------------------------------------------


async def test_the_right_secret_authenticates_and_central_proves_it_knows_the_cp(
    central: CentralService, repo: SqliteRepository, monitor: Monitor
) -> None:
    """Monitor.login checks AUTH_OK's signature with the CP's own keys: mutual authentication."""
    answer = await monitor.login("CP1", SECRETS["CP1"])
    assert answer.opcode == "AUTH_OK"
    assert state(central, "CP1") == "Activado"
    for _ in range(3):
        assert await monitor.ask("HB", "CP1", "OK") == Frame("OK")
    assert state(central, "CP1") == "Activado"
    [row] = audit(repo, AuditAction.AUTH_OK)
    assert (row.actor, row.ip, row.cp_id, row.outcome) == ("cp:CP1", "127.0.0.1", "CP1", Outcome.OK)


async def test_the_challenge_carries_the_verifier_cost_and_extends_our_nonce(
    monitor: Monitor, repo: SqliteRepository
) -> None:
    client_nonce = new_nonce()
    challenge = await monitor.ask("AUTH", "CP1", "OK", "", client_nonce, Exchange().public)
    assert challenge.opcode == "CHALLENGE"
    salt, n, r, p, nonce = challenge.fields
    kdf = repo.get_verifier("CP1").kdf  # type: ignore[union-attr]
    assert (salt, n, r, p) == (b64(kdf.salt), str(kdf.n), str(kdf.r), str(kdf.p))
    assert nonce.startswith(client_nonce)
    assert len(nonce) > len(client_nonce)


@pytest.mark.parametrize(
    ("cp_id", "secret", "reason"),
    [
        ("NOPE", "anything", "not registered at the Registry"),
        ("GONE", "its old secret", "not registered at the Registry"),
        ("ADMIN1", "anything", "not registered at the Registry"),
        ("CP1", "a guess", "wrong credentials"),
        ("CP1", SECRETS["CP2"], "wrong credentials"),
    ],
    ids=["unknown", "deregistered", "admin-added", "wrong-secret", "another-cps-secret"],
)
async def test_a_refused_login_says_why_and_is_audited_with_the_address(
    central: CentralService,
    repo: SqliteRepository,
    monitor: Monitor,
    cp_id: str,
    secret: str,
    reason: str,
) -> None:
    assert await monitor.login(cp_id, secret) == Frame("AUTH_DENIED", (reason,))
    [row] = audit(repo)
    assert (row.action, row.actor, row.ip, row.outcome, row.cp_id, row.detail) == (
        AuditAction.AUTH_FAILED,
        f"cp:{cp_id}",
        "127.0.0.1",
        Outcome.DENIED,
        cp_id,
        reason,
    )
    assert await monitor.ask("HB", cp_id, "OK") == Frame("ERR", ("not_authenticated",))
    assert state(central, "CP1") == "Desconectado"


async def test_a_proof_is_taken_only_as_the_answer_to_this_links_challenge(
    repo: SqliteRepository, monitor: Monitor
) -> None:
    refused = Frame("AUTH_DENIED", ("PROOF without a CHALLENGE for this CP on this link",))
    assert await monitor.ask("PROOF", "CP1", "A" * 43) == refused
    assert await monitor.ask("PROOF") == refused
    client_nonce, exchange = new_nonce(), Exchange().public
    challenge = await monitor.ask("AUTH", "CP1", "OK", "", client_nonce, exchange)
    proof, _, _ = Prover("CP1", SECRETS["CP1"]).answer(
        client_nonce, *challenge.fields, exchange=exchange
    )
    assert await monitor.ask("PROOF", "CP2", proof) == refused  # not the CP challenged
    assert await monitor.ask("PROOF", "CP1", proof) == refused  # the challenge was spent
    assert [r.action for r in audit(repo)] == [AuditAction.AUTH_FAILED] * 4
    assert {r.ip for r in audit(repo)} == {"127.0.0.1"}
    assert (await monitor.login("CP1", SECRETS["CP1"])).opcode == "AUTH_OK"


async def test_a_captured_proof_replayed_on_a_new_link_fails(
    central: CentralService, repo: SqliteRepository, connect: Connect
) -> None:
    first = await connect()
    assert (await first.login("CP1", SECRETS["CP1"])).opcode == "AUTH_OK"
    first.writer.close()
    await eventually(lambda: state(central, "CP1") == "Desconectado", what="first link gone")

    attacker = await connect()
    challenge = await attacker.ask("AUTH", "CP1", "OK", "", new_nonce(), Exchange().public)
    assert challenge.opcode == "CHALLENGE"
    assert await attacker.ask("PROOF", "CP1", first.last_proof) == Frame(
        "AUTH_DENIED", ("wrong credentials",)
    )
    assert state(central, "CP1") == "Desconectado"
    assert audit(repo)[-1].action is AuditAction.AUTH_FAILED


async def test_a_second_monitor_with_the_right_secret_is_refused_while_the_first_holds_the_cp(
    repo: SqliteRepository, connect: Connect
) -> None:
    first, second = await connect(), await connect()
    assert (await first.login("CP1", SECRETS["CP1"])).opcode == "AUTH_OK"
    assert await second.login("CP1", SECRETS["CP1"]) == Frame(
        "AUTH_DENIED", ("CP already connected from another Monitor",)
    )
    assert [r.action for r in audit(repo)] == [
        AuditAction.AUTH_OK,
        AuditAction.KEY_ISSUED,
        AuditAction.AUTH_OK,  # the proof was right ...
        AuditAction.AUTH_FAILED,  # ... but the CP is taken (and given no key)
    ]


async def test_malformed_auth_is_refused(monitor: Monitor, repo: SqliteRepository) -> None:
    malformed = Frame(
        "AUTH_DENIED",
        ("malformed AUTH: expected cp_id, engine_state, reason, client_nonce, exchange",),
    )
    assert await monitor.ask("AUTH", "CP1", "OK", "") == malformed
    assert await monitor.ask("AUTH") == malformed
    denied = await monitor.ask("AUTH", "CP1", "OK", "", "short", Exchange().public)
    assert denied.opcode == "AUTH_DENIED"
    assert "client nonce" in denied.fields[0]
    assert len(audit(repo, AuditAction.AUTH_FAILED)) == 3


async def test_repeated_failures_throttle_the_cp_from_any_address(
    central: CentralService, repo: SqliteRepository, connect: Connect, clock: Clock
) -> None:
    """Two failures are free, the third makes CP1 wait 1 s: even its right secret, even from
    another address, is refused unheard until the (fake) clock has moved on."""
    guesser = await connect("127.0.0.2")
    for _ in range(3):
        assert await guesser.login("CP1", "guess") == Frame("AUTH_DENIED", ("wrong credentials",))
    owner = await connect("127.0.0.3")
    assert await owner.login("CP1", SECRETS["CP1"]) == Frame(
        "AUTH_DENIED", ("too many failed attempts; try again in 1 s",)
    )
    throttled = audit(repo, AuditAction.AUTH_THROTTLED)
    assert [(r.ip, r.cp_id, r.outcome) for r in throttled] == [("127.0.0.3", "CP1", Outcome.DENIED)]
    assert (await owner.login("CP2", SECRETS["CP2"])).opcode == "AUTH_OK"  # other CPs are fine
    clock.now += 1.0
    owner = await connect("127.0.0.3")
    assert (await owner.login("CP1", SECRETS["CP1"])).opcode == "AUTH_OK"
    assert state(central, "CP1") == "Activado"


async def test_repeated_failures_throttle_the_address_for_every_cp(
    repo: SqliteRepository, connect: Connect, clock: Clock
) -> None:
    guesser = await connect("127.0.0.4")
    for cp_id in ("CP1", "CP2", "NOPE", "CP1"):  # an unregistered CP is no guess at a secret
        await guesser.login(cp_id, "guess")
    assert await guesser.login("CP2", SECRETS["CP2"]) == Frame(
        "AUTH_DENIED", ("too many failed attempts; try again in 1 s",)
    )
    assert audit(repo)[-1].ip == "127.0.0.4"
    elsewhere = await connect("127.0.0.5")
    assert (await elsewhere.login("CP2", SECRETS["CP2"])).opcode == "AUTH_OK"


async def test_a_capture_of_the_whole_exchange_holds_no_secret_and_no_stored_key(
    repo: SqliteRepository, connect: Connect
) -> None:
    monitor = await connect()
    assert (await monitor.login("CP1", SECRETS["CP1"])).opcode == "AUTH_OK"
    assert await monitor.ask("HB", "CP1", "OK") == Frame("OK")
    other = await connect()
    assert (await other.login("CP2", "a guess")).opcode == "AUTH_DENIED"
    wire = bytes(monitor.capture) + bytes(other.capture)
    assert b"CHALLENGE#" in wire  # the capture is the real exchange
    assert b"PROOF#CP1#" in wire
    never = [SECRETS["CP1"].encode(), b"a guess"]
    for cp_id in ("CP1", "CP2"):
        verifier = repo.get_verifier(cp_id)
        assert verifier is not None
        for key in (verifier.stored_key, verifier.server_key):
            never += [key, b64(key).encode(), key.hex().encode()]
    assert [secret for secret in never if secret in wire] == []


# --- the Engine's health, told with AUTH -----------------------------------------------------


@pytest.mark.parametrize(
    "health",
    [("KO", "Engine not answering: refused"), ("KO", ""), ("", "")],
    ids=["KO", "KO-no-reason", "not-told"],
)
async def test_a_cp_is_never_activado_before_its_engine_is_known_healthy(
    central: CentralService, monitor: Monitor, health: tuple[str, str]
) -> None:
    """The Engine's health comes with AUTH; without it, the CP waits for an OK heartbeat."""
    assert (await monitor.login("CP1", SECRETS["CP1"], *health)).opcode == "AUTH_OK"
    cp = central.cp("CP1")
    assert cp is not None
    assert (cp.state.value, cp.available) == ("Averiado", False)
    expected = {"KO": health[1] or "Engine KO", "": "Engine health not reported yet"}[health[0]]
    assert cp.fault_reason == expected
    assert await monitor.ask("HB", "CP1", "OK") == Frame("OK")
    assert state(central, "CP1") == "Activado"


async def test_engine_ko_and_back_by_heartbeat(central: CentralService, monitor: Monitor) -> None:
    await monitor.login("CP1", SECRETS["CP1"])
    assert await monitor.ask("HB", "CP1", "KO") == Frame("OK")
    assert state(central, "CP1") == "Averiado"
    assert await monitor.ask("HB", "CP1", "KO") == Frame("OK")
    assert await monitor.ask("HB", "CP1", "OK") == Frame("OK")
    assert state(central, "CP1") == "Activado"


# --- the link's rules ------------------------------------------------------------------------


async def test_frames_before_auth_or_unknown_are_refused_and_change_nothing(
    central: CentralService, repo: SqliteRepository, monitor: Monitor
) -> None:
    assert await monitor.ask("FAULT", "CP1", "forged") == Frame("ERR", ("not_authenticated",))
    for _ in range(3):
        assert await monitor.ask("FLY", "CP1") == Frame("ERR", ("unknown_opcode",))
    assert state(central, "CP1") == "Desconectado"
    [row] = audit(repo)  # once per link, however many
    assert (row.action, row.actor, row.ip, row.outcome, row.params["kind"]) == (
        AuditAction.MESSAGE_REJECTED,
        "cp:?",
        "127.0.0.1",
        Outcome.DENIED,
        "unknown_opcode",
    )
    assert "FLY" in row.detail


async def test_bad_frames_are_nacked_audited_once_and_five_in_a_row_end_the_link(
    repo: SqliteRepository, monitor: Monitor
) -> None:
    hb = encode("HB", "CP1", "OK")
    bad = hb[:-1] + bytes([hb[-1] ^ 0xFF])
    monitor.write(bad)
    assert await monitor.byte() == NACK
    assert (await monitor.login("CP1", SECRETS["CP1"])).opcode == "AUTH_OK"  # still served
    for _ in range(5):
        monitor.write(bad)
        assert await monitor.byte() == NACK
    assert await monitor.closed_by_central()
    rejected = audit(repo, AuditAction.MESSAGE_REJECTED)
    assert [(r.params["kind"], r.ip) for r in rejected] == [("bad_lrc", "127.0.0.1")]
    assert rejected[0].actor == "cp:?"


async def test_silence_ends_the_link_and_the_cp_is_desconectado(
    central: CentralService, monitor: Monitor
) -> None:
    await monitor.login("CP1", SECRETS["CP1"])
    assert await monitor.closed_by_central()
    await eventually(lambda: state(central, "CP1") == "Desconectado", what="Desconectado")


async def test_an_answer_never_acked_ends_the_link(
    central: CentralService, monitor: Monitor
) -> None:
    await monitor.login("CP1", SECRETS["CP1"])
    await monitor.ask("HB", "CP1", "OK", ack=False)
    assert await monitor.closed_by_central()
    await eventually(lambda: state(central, "CP1") == "Desconectado", what="Desconectado")


async def test_frames_sent_ahead_are_answered_in_turn(monitor: Monitor) -> None:
    await monitor.login("CP1", SECRETS["CP1"])
    monitor.write(encode("HB", "CP1", "OK") + encode("HB", "CP1", "KO"))
    assert await monitor.byte() == ACK
    assert await monitor.answer() == Frame("OK")
    monitor.write(bytes((ACK,)))
    assert await monitor.byte() == ACK
    assert await monitor.answer() == Frame("OK")
    monitor.write(bytes((ACK,)))


async def test_closing_the_server_ends_every_link_and_no_supply(
    central: CentralService, server: MonitorServer, monitor: Monitor
) -> None:
    """A stopping Central drops its links as a dying one would: nothing is ended or billed."""
    a_driver(central._repo, "D1")  # type: ignore[arg-type]
    await monitor.login("CP1", SECRETS["CP1"])
    await central.on_authorization_request(AuthorizationRequest(driver_id="D1", cp_id="CP1"))
    assert central.cp("CP1").session_id is not None  # type: ignore[union-attr]
    await server.close()
    assert await monitor.closed_by_central()
    publisher = central.publisher
    assert isinstance(publisher, RecordingPublisher)
    assert not publisher.of(ChargingTicket)
    assert not publisher.of(StopSupply)
    assert central.cp("CP1").session_id is not None  # type: ignore[union-attr]
    assert [s.cp_id for s in central._repo.open_sessions()] == ["CP1"]


# --- the CP key: handed over at AUTH_OK, revoked and rotated by heartbeat notices ---------------

LOW_ORDER_POINT = b64(bytes(32))  # well formed, but its shared secret is all zeros


async def test_auth_ok_hands_over_the_key_central_holds_wrapped_for_this_exchange(
    central: CentralService, keys: CentralKeys, repo: SqliteRepository, monitor: Monitor
) -> None:
    """AUTH_OK#cp#signature#version#central_exchange#wrapped: `Monitor.login` checks Central's
    signature over it and unwraps the key with its own X25519 key and SCRAM client key."""
    answer = await monitor.login("CP1", SECRETS["CP1"])
    assert answer.opcode == "AUTH_OK"
    assert answer.fields[2] == "1"  # the first key of CP1
    assert monitor.key is not None
    assert monitor.key == keys.ring.current("CP1")
    assert (monitor.key.cp_id, monitor.key.version) == ("CP1", 1)
    [issued] = audit(repo, AuditAction.KEY_ISSUED)
    assert (issued.actor, issued.ip, issued.cp_id) == ("cp:CP1", "127.0.0.1", "CP1")
    assert await monitor.ask("HB", "CP1", "OK") == Frame("OK")
    assert state(central, "CP1") == "Activado"


async def test_every_authentication_hands_over_a_new_key(
    central: CentralService, keys: CentralKeys, connect: Connect
) -> None:
    first = await connect()
    assert (await first.login("CP1", SECRETS["CP1"])).opcode == "AUTH_OK"
    first.writer.close()
    await eventually(lambda: state(central, "CP1") == "Desconectado", what="first link gone")
    again = await connect()
    assert (await again.login("CP1", SECRETS["CP1"])).opcode == "AUTH_OK"
    assert again.key is not None
    assert first.key is not None
    assert again.key.version == 2
    assert again.key.secret != first.key.secret
    assert keys.ring.current("CP1") == again.key


@pytest.mark.parametrize(
    ("exchange", "reason"),
    [
        (None, "malformed AUTH: expected cp_id, engine_state, reason, client_nonce, exchange"),
        ("", "malformed AUTH: expected cp_id, engine_state, reason, client_nonce, exchange"),
        ("not-a-key", "malformed AUTH: the exchange key must be an X25519 public key"),
        (LOW_ORDER_POINT, "malformed AUTH: the exchange key must be an X25519 public key"),
    ],
    ids=["missing", "empty", "malformed", "low-order-point"],
)
async def test_an_auth_without_a_usable_exchange_key_is_denied_and_audited(
    central: CentralService,
    keys: CentralKeys,
    repo: SqliteRepository,
    monitor: Monitor,
    exchange: str | None,
    reason: str,
) -> None:
    fields = ("CP1", "OK", "", new_nonce()) + (() if exchange is None else (exchange,))
    denied = await monitor.ask("AUTH", *fields)
    assert denied.opcode == "AUTH_DENIED"
    assert denied.fields[0].startswith(reason)
    [row] = audit(repo)
    assert (row.action, row.actor, row.ip, row.cp_id, row.outcome) == (
        AuditAction.AUTH_FAILED,
        "cp:CP1",
        "127.0.0.1",
        "CP1",
        Outcome.DENIED,
    )
    assert row.detail.startswith(reason)
    assert keys.ring.current("CP1") is None
    assert state(central, "CP1") == "Desconectado"
    assert (await monitor.login("CP1", SECRETS["CP1"])).opcode == "AUTH_OK"  # link still served


@pytest.mark.parametrize("encrypt", [False])
@pytest.mark.parametrize("exchange", [True, False], ids=["with-exchange", "without-exchange"])
async def test_in_comparison_mode_auth_ok_is_issue_13s_and_no_key_is_issued(
    central: CentralService,
    keys: CentralKeys,
    repo: SqliteRepository,
    monitor: Monitor,
    exchange: bool,
) -> None:
    """`EV_Central --cp-encryption off` (the bench's baseline): AUTH_OK#cp#signature."""
    answer = await monitor.login("CP1", SECRETS["CP1"], exchange=exchange, grant=False)
    assert answer.opcode == "AUTH_OK"
    assert len(answer.fields) == 2
    assert keys.ring.current("CP1") is None
    assert repo.stored_cp_keys() == []
    assert audit(repo, AuditAction.KEY_ISSUED) == []
    assert await monitor.ask("HB", "CP1", "OK") == Frame("OK")
    assert state(central, "CP1") == "Activado"


async def test_after_revocation_every_heartbeat_is_answered_keys_revoked_and_the_link_stays(
    central: CentralService, keys: CentralKeys, monitor: Monitor
) -> None:
    """The Monitor keeps heartbeating (the CP stays Parado, not Desconectado) until it
    authenticates again on the same link, which hands over a new key."""
    assert (await monitor.login("CP1", SECRETS["CP1"])).opcode == "AUTH_OK"
    await central.revoke_keys("CP1")
    assert keys.ring.current("CP1") is None
    for _ in range(4):  # each answered on the same link: an ERR answer ends nothing
        assert await monitor.ask("HB", "CP1", "OK") == Frame("ERR", ("keys_revoked",))
        assert state(central, "CP1") == "Parado"
    assert await monitor.ask("HB", "CP1", "KO") == Frame("ERR", ("keys_revoked",))  # Averiado
    assert await monitor.ask("HB", "CP1", "OK") == Frame("ERR", ("keys_revoked",))
    assert (await monitor.login("CP1", SECRETS["CP1"])).opcode == "AUTH_OK"
    assert monitor.key is not None
    assert monitor.key.version == 2
    assert keys.ring.current("CP1") == monitor.key
    assert await monitor.ask("HB", "CP1", "OK") == Frame("OK")
    assert state(central, "CP1") == "Activado"


async def test_a_rotation_asks_each_connected_cp_once_to_authenticate_again(
    central: CentralService, keys: CentralKeys, connect: Connect
) -> None:
    one, two = await connect(), await connect()
    assert (await one.login("CP1", SECRETS["CP1"])).opcode == "AUTH_OK"
    assert (await two.login("CP2", SECRETS["CP2"])).opcode == "AUTH_OK"
    assert sorted(central.rotate_all_keys()) == ["CP1", "CP2"]
    assert await one.ask("HB", "CP1", "OK") == Frame("ERR", ("rekey",))
    assert await one.ask("HB", "CP1", "OK") == Frame("OK")  # said once
    assert (await one.login("CP1", SECRETS["CP1"])).opcode == "AUTH_OK"  # on the same link
    assert one.key is not None
    assert one.key.version == 2
    assert await one.ask("HB", "CP1", "OK") == Frame("OK")
    assert await two.ask("HB", "CP2", "OK") == Frame("ERR", ("rekey",))
    assert state(central, "CP1") == state(central, "CP2") == "Activado"


async def test_a_capture_of_the_key_exchange_holds_no_key(
    server: MonitorServer, keys: CentralKeys, repo: SqliteRepository
) -> None:
    """Through a relay that records every byte both ways (a sniffer on the link): the whole
    exchange and a heartbeat, and neither the CP key nor the secret in any spelling."""
    with relay_to(("127.0.0.1", server.bound_port)) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        monitor = Monitor(reader, writer)
        try:
            assert (await monitor.login("CP1", SECRETS["CP1"])).opcode == "AUTH_OK"
            assert await monitor.ask("HB", "CP1", "OK") == Frame("OK")
            wire = relay.bytes()
        finally:
            writer.close()
    key = keys.ring.current("CP1")
    assert key is not None
    assert key == monitor.key
    for frame in (b"AUTH#CP1#OK##", b"CHALLENGE#", b"PROOF#CP1#", b"AUTH_OK#CP1#", b"HB#CP1#OK"):
        assert frame in wire  # the capture is the real exchange
    spellings = [key.secret, key.secret.hex().encode(), b64(key.secret).encode()]
    spellings.append(base64.b64encode(key.secret).rstrip(b"="))
    never = [*spellings, SECRETS["CP1"].encode()]
    assert [secret for secret in never if secret in wire] == []
