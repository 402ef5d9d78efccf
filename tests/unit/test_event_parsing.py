"""The event parser never lets bad input through as anything but BadEvent with a reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from evcharging.contracts.events import (
    BY_TYPE,
    BadEvent,
    CpErrorFixed,
    CpErrorSimulated,
    CpStatus,
    Event,
    parse_event,
)
from evcharging.domain.cp_state import CPState

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


def outcome(raw: bytes) -> Event | BadEvent:
    """The parse result, or the BadEvent it raised; any other exception fails the test."""
    try:
        return parse_event(raw)
    except BadEvent as exc:
        return exc


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_an_event_or_a_bad_event(raw: bytes) -> None:
    result = outcome(raw)
    assert isinstance(result, Event) or result.reason


@settings(max_examples=300)
@given(
    st.sampled_from(sorted(BY_TYPE)), st.dictionaries(st.text(max_size=15), json_values, max_size=8)
)
def test_known_types_with_arbitrary_fields_are_validated(event_type: str, fields: dict) -> None:
    result = outcome(json.dumps({**fields, "event_type": event_type}).encode())
    if isinstance(result, BadEvent):
        assert result.reason.startswith("invalid")
    else:
        assert result.event_type == event_type


@given(st.sampled_from(["-0.001", "-5", "1000.001", "1e9", "NaN", "Infinity", "abc"]))
def test_absurd_energy_is_refused(energy: str) -> None:
    raw = json.dumps(
        {
            "event_type": "CP_TELEMETRY",
            "cp_id": "CP1",
            "session_id": "0" * 32,
            "driver_id": "D1",
            "seq": 1,
            "kw": "22",
            "energy_kwh": energy,
            "amount_eur": "1",
        }
    ).encode()
    result = outcome(raw)
    assert isinstance(result, BadEvent), f"energy {energy} accepted"
    assert "energy_kwh" in result.reason


def test_events_carry_cp_states_as_the_domain_cp_state_with_the_same_wire_text() -> None:
    status = CpStatus(
        cp_id="CP1", location="A", price_eur_per_kwh="0.35", state="Averiado", available=False
    )
    assert status.state is CPState.AVERIADO
    assert json.loads(status.to_bytes())["state"] == "Averiado"
    again = parse_event(status.to_bytes())
    assert isinstance(again, CpStatus)
    assert again.state is CPState.AVERIADO
    assert CpErrorSimulated(cp_id="CP1", message="m").new_status is CPState.AVERIADO
    assert CpErrorFixed(cp_id="CP1", message="m").new_status is CPState.ACTIVADO
    with pytest.raises(ValidationError):
        CpStatus.model_validate({**status.model_dump(), "state": "Out of Order"})


def test_id_and_price_are_still_importable_from_events() -> None:
    from evcharging.contracts import events, fields

    assert (events.Id, events.Price) == (fields.Id, fields.Price)
