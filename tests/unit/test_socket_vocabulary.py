"""The socket protocol's words are spelt once (contracts.socket_ops), each peer's table of handlers
answers exactly what the Monitor sends it, and free text is scrubbed for frames in one place."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from evcharging.adapters.sockets import central_server, engine_link, monitor_links
from evcharging.contracts import frames, socket_ops
from evcharging.contracts.frames import ETX, MAX_TEXT, STX, decode, encode, wire_text
from evcharging.contracts.socket_ops import (
    TO_CENTRAL,
    TO_ENGINE,
    CentralState,
    EngineState,
    ErrReason,
    Opcode,
)

SRC = Path(central_server.__file__).resolve().parents[2]  # src/evcharging
SOCKET_MODULES = [
    SRC / "adapters" / "sockets" / "central_server.py",
    SRC / "adapters" / "sockets" / "engine_link.py",
    SRC / "adapters" / "sockets" / "framing.py",
    SRC / "adapters" / "sockets" / "monitor_links.py",
    SRC / "services" / "monitor.py",
]
WORDS = {m.value for enum in (Opcode, EngineState, CentralState, ErrReason) for m in enum}


def _sent_opcodes(cls: type) -> set[str]:
    """The opcodes a Monitor link loop puts first in a request: `conn.request(Opcode.X, ...)` or
    `expect_ok(conn, timeout, Opcode.X, ...)`, read from the class's source."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(cls).strip())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        position = {"request": 0, "expect_ok": 2}.get(name)
        if position is None or len(node.args) <= position:
            continue
        arg = node.args[position]
        assert isinstance(arg, ast.Attribute), f"{name}: the opcode must be an Opcode member"
        assert isinstance(arg.value, ast.Name), ast.unparse(arg)
        assert arg.value.id == "Opcode", ast.unparse(arg)
        found.add(Opcode[arg.attr].value)
    return found


def test_central_answers_exactly_what_the_monitor_sends_it() -> None:
    sent = _sent_opcodes(monitor_links.CentralLinkLoop)
    assert sent == set(TO_CENTRAL)
    assert set(central_server.REQUESTS) == sent


def _request_arity(cls: type, opcode: Opcode) -> set[int]:
    """How many fields the loop's `conn.request(Opcode.X, ...)` and
    `expect_ok(conn, timeout, Opcode.X, ...)` calls give `opcode`."""
    found = set()
    for node in ast.walk(ast.parse(inspect.getsource(cls).strip())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        position = {"request": 0, "expect_ok": 2}.get(name)
        if position is None or len(node.args) <= position:
            continue
        if ast.unparse(node.args[position]) == f"Opcode.{opcode.name}":
            found.add(len(node.args) - position - 1)
    return found


def test_the_login_frames_have_the_release_2_layout() -> None:
    """AUTH#cp_id#engine_state#reason#client_nonce#exchange and PROOF#cp_id#client_proof:
    location and price no longer travel (the Registry owns them), and no secret field exists."""
    assert _request_arity(monitor_links.CentralLinkLoop, Opcode.AUTH) == {5}
    assert _request_arity(monitor_links.CentralLinkLoop, Opcode.PROOF) == {2}
    assert {Opcode.AUTH, Opcode.PROOF} <= TO_CENTRAL


def test_the_key_handover_frames_have_the_issue_14_layout() -> None:
    """KEYX#monitor_exchange, KEY#cp_id#version#wrapped, KEY_DROP#cp_id: what the Engine's
    handlers take (a frame of another shape is refused there)."""
    loop = monitor_links.EngineLinkLoop
    assert _request_arity(loop, Opcode.KEYX) == {1}
    assert _request_arity(loop, Opcode.KEY) == {3}
    assert _request_arity(loop, Opcode.KEY_DROP) == {1}
    assert {Opcode.KEYX, Opcode.KEY, Opcode.KEY_DROP} <= TO_ENGINE


def test_the_engine_answers_exactly_what_the_monitor_sends_it() -> None:
    sent = _sent_opcodes(monitor_links.EngineLinkLoop)
    assert sent == set(TO_ENGINE)
    assert set(engine_link.REQUESTS) == sent


def test_requests_and_answers_are_distinct_words() -> None:
    answers = {
        Opcode.OK,
        Opcode.KO,
        Opcode.ERR,
        Opcode.CHALLENGE,
        Opcode.AUTH_OK,
        Opcode.AUTH_DENIED,
    }
    assert TO_CENTRAL.isdisjoint(TO_ENGINE)
    assert (TO_CENTRAL | TO_ENGINE | answers) == set(Opcode)
    assert not (TO_CENTRAL | TO_ENGINE) & answers


def _string_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants that are not docstrings."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


@pytest.mark.parametrize("module", SOCKET_MODULES, ids=lambda p: p.name)
def test_no_opcode_or_status_word_is_spelt_outside_the_contracts(module: Path) -> None:
    literals = _string_literals(ast.parse(module.read_text(encoding="utf-8")))
    assert [(line, text) for line, text in literals if text in WORDS] == []


def test_the_wire_text_of_the_enums_is_unchanged() -> None:
    """Renaming a member must not change the protocol (docs/socket-protocol.md §3)."""
    assert encode(Opcode.HB, "CP01", EngineState.OK) == encode("HB", "CP01", "OK")
    assert decode(encode(Opcode.CENTRAL, CentralState.UP)).fields == ("UP",)
    assert [m.value for m in ErrReason] == [
        "not_authenticated",
        "unknown_opcode",
        "keys_revoked",
        "rekey",
    ]
    assert all(m.value == m.name for m in Opcode)


# --- the scrub -----------------------------------------------------------------------------


def test_wire_text_strips_the_separator_and_the_framing_bytes_and_caps_the_length() -> None:
    text = f"a#b{chr(STX)}c{chr(ETX)}d"
    assert wire_text(text) == "a b c d"
    assert frames.reserved_char(wire_text(text)) is None
    assert decode(encode(Opcode.KO, wire_text(text))).fields == ("a b c d",)
    assert wire_text("é" * (MAX_TEXT + 50)) == "é" * MAX_TEXT
    assert wire_text("Engine KO") == "Engine KO"


def test_the_scrub_and_the_reserved_rule_live_once_in_contracts_frames() -> None:
    """No other module spells '#', STX or ETX to clean or check a field."""
    frames_file = Path(frames.__file__).resolve()
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.resolve() == frames_file:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, text in _string_literals(tree):
            if "\x02" in text or "\x03" in text:
                offenders.append(f"{path.relative_to(SRC)}:{line} {text!r}")
        offenders += [
            f"{path.relative_to(SRC)}:{node.lineno} {ast.unparse(node)}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "replace"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == "#"
        ]
    assert offenders == []
    assert not hasattr(engine_link, "wire_text") or engine_link.wire_text is frames.wire_text
    assert not hasattr(monitor_links, "_field")


def test_socket_ops_is_only_words() -> None:
    """The contracts module imports nothing of the program (it is the vocabulary, not a layer)."""
    tree = ast.parse(Path(socket_ops.__file__).read_text(encoding="utf-8"))
    imported = [
        n.module
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module != "__future__"
    ]
    assert imported == ["enum"]
