"""Central's views (services/central_views.py): read-only, the wire dict built once, what the
admin page styles a tile by (`tone`) decided by Central, not by a map in the page's script, and
the CP's key state and why it is stopped (never the key)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from evcharging.domain.cp_state import CPFacts, CPState, derive_state
from evcharging.domain.records import CPRecord
from evcharging.domain.session import open_session
from evcharging.services.central_keys import CentralKeys, KeyState
from evcharging.services.central_live import LiveCP
from evcharging.services.central_views import CPView, MessageView, cp_view
from evcharging.services.cp_keys import MasterKey
from tests.support.builders import a_cp, a_repo

STATIC = Path(__file__).resolve().parents[2] / "src" / "evcharging" / "adapters" / "web" / "static"
NOON = datetime(2026, 11, 27, 12, tzinfo=UTC)
EVERY_FACTS = [
    CPFacts(connected, ok, stopped, error, reserved, supplying, revoked)
    for connected in (False, True)
    for ok in (False, True)
    for stopped in (False, True)
    for error in (False, True)
    for reserved in (False, True)
    for supplying in (False, True)
    for revoked in (False, True)
]


CONNECTED = CPFacts(monitor_connected=True)


def a_live_cp(facts: CPFacts = CONNECTED) -> LiveCP:
    return LiveCP(CPRecord("CP1", "Alicante", Decimal("0.35")), facts)


@pytest.mark.parametrize(
    ("state", "tone"),
    [
        (CPState.ACTIVADO, "ok"),
        (CPState.SUMINISTRANDO, "ok"),
        (CPState.PARADO, "stopped"),
        (CPState.AVERIADO, "fault"),
        (CPState.DESCONECTADO, "off"),
    ],
)
def test_each_state_has_the_tone_the_pages_style(state: CPState, tone: str) -> None:
    """The tiles' colours are shared/base.css (the admin dashboard's and the public front's)."""
    facts = next(f for f in EVERY_FACTS if derive_state(f) is state)
    view = cp_view(a_live_cp(facts))
    assert (view.state, view.tone, view.colour) == (state, tone, state.colour)
    assert f".tile.{tone} " in (STATIC / "shared" / "base.css").read_text(encoding="utf-8")


def test_the_pages_scripts_have_no_map_of_states_to_classes() -> None:
    shared = (STATIC / "shared" / "live.js").read_text(encoding="utf-8")
    assert "cp.tone" in shared  # EVLive.fillTile: the tile's class is Central's tone
    for script in ("shared/live.js", "admin/admin.js", "front/front.js"):
        text = (STATIC / script).read_text(encoding="utf-8")
        assert "fillTile(" in text, script
        assert not re.search(r"\b(Activado|Suministrando|Parado|Averiado|Desconectado)\s*:", text)


def test_a_view_is_read_only_and_its_wire_form_is_built_once() -> None:
    view = cp_view(a_live_cp())
    with pytest.raises(AttributeError):
        view.caption = "x"  # type: ignore[misc]
    assert view.json is view.json
    assert orjson.loads(orjson.dumps(view.json)) == view.json
    assert view == cp_view(a_live_cp())
    assert view != cp_view(a_live_cp(CPFacts()))


def test_a_view_matches_its_facts_in_every_combination() -> None:
    """The cached per-facts part of a view (state, caption, actions, available) never drifts."""
    for facts in EVERY_FACTS:
        view = cp_view(a_live_cp(facts))
        state = derive_state(facts)
        assert (view.state, view.caption) == (state, state.caption)
        assert view.available == (state is CPState.ACTIVADO and not facts.reserved)


def test_a_cp_with_a_session_shows_its_figures_and_one_without_none() -> None:
    cp = a_live_cp()
    assert (cp_view(cp).driver_id, cp_view(cp).kw, cp_view(cp).energy_kwh) == (None, None, None)
    cp.attach(open_session("s1", "D1", "CP1", Decimal("0.35"), NOON))
    view = cp_view(cp)
    assert (view.driver_id, view.session_status, view.kw, view.amount_eur) == (
        "D1",
        "authorised",
        "0",
        "0.00",
    )
    assert isinstance(view, CPView)


def test_a_message_view_keeps_its_time_for_the_panel_and_iso_text_for_the_wire() -> None:
    message = MessageView(NOON, "warning", "CP CP1 FAULT")
    assert message.line == (NOON, "warning", "CP CP1 FAULT")
    assert message.json == {"at": NOON.isoformat(), "level": "warning", "text": "CP CP1 FAULT"}


# --- issue 14: the key state, and why a CP is out of service --------------------------------


@pytest.mark.parametrize(
    ("facts", "key", "shown", "version"),
    [
        (CONNECTED, KeyState(version=3, issued=3), "key v3", 3),
        (CONNECTED, KeyState(version=None, issued=0), "no key", None),  # never authenticated
        (CPFacts(), KeyState(version=2, issued=2), "key v2", 2),  # kept across a restart
        (CONNECTED, None, "no key", None),  # a Central that issues no keys
        (
            CONNECTED.with_(keys_revoked=True),
            KeyState(version=None, issued=4),
            "keys revoked",
            None,
        ),
        (CPFacts(keys_revoked=True), None, "keys revoked", None),
    ],
)
def test_a_view_shows_the_key_in_use_by_its_version_only(
    facts: CPFacts, key: KeyState | None, shown: str, version: int | None
) -> None:
    view = cp_view(a_live_cp(facts), key)
    assert (view.key, view.key_version, view.keys_revoked) == (
        shown,
        version,
        facts.keys_revoked,
    )


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (CONNECTED.with_(admin_stopped=True), "stopped by Central"),
        (CONNECTED.with_(keys_revoked=True), "keys revoked"),
        (
            CONNECTED.with_(admin_stopped=True, keys_revoked=True),
            "stopped by Central; keys revoked",
        ),
        (CONNECTED, None),
        (CONNECTED.with_(keys_revoked=True, engine_ok=False), None),  # Averiado: its fault shows
        (CPFacts(admin_stopped=True, keys_revoked=True), None),  # Desconectado
    ],
)
def test_a_parado_cp_says_why_it_is_out_of_service(facts: CPFacts, reason: str | None) -> None:
    view = cp_view(a_live_cp(facts))
    assert view.stop_reason == reason
    assert (view.state is CPState.PARADO) == (reason is not None)


def test_every_parado_cp_has_a_reason_and_no_other_has_one() -> None:
    for facts in EVERY_FACTS:
        view = cp_view(a_live_cp(facts))
        assert (view.stop_reason is not None) == (view.state is CPState.PARADO), facts
        assert (view.key == "keys revoked") == facts.keys_revoked


def test_a_view_never_carries_key_material() -> None:
    repo = a_repo()
    a_cp(repo, "CP1")
    keys = CentralKeys(repo, MasterKey(MasterKey.generate()))
    key = keys.issue("CP1")
    wire = orjson.dumps(cp_view(a_live_cp(), keys.state("CP1")).json)
    assert b"key v1" in wire
    for form in (key.secret, key.secret.hex().encode(), orjson.dumps(list(key.secret))):
        assert form not in wire
