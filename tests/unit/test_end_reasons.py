"""One vocabulary of end reasons: every wire reason has one meaning; an unknown one is refused."""

from __future__ import annotations

import json
from uuid import uuid4

import pytest

from evcharging.contracts.end_reasons import SupplyEndReason
from evcharging.contracts.events import BadEvent, SupplyEnded, parse_event
from evcharging.domain.session import EndReason


def test_every_session_reason_is_a_wire_reason_that_means_itself() -> None:
    for reason in EndReason:
        assert SupplyEndReason.of(reason).session_reason is reason


@pytest.mark.parametrize(
    ("wire", "billed"),
    [
        (SupplyEndReason.ENGINE_RESTARTED, EndReason.CP_FAULT),
        (SupplyEndReason.ENERGY_LIMIT_REACHED, EndReason.UNPLUGGED),
        (SupplyEndReason.SESSION_CLOSED, EndReason.STOPPED_BY_CENTRAL),
    ],
)
def test_the_engines_own_words_map_to_one_session_reason(
    wire: SupplyEndReason, billed: EndReason
) -> None:
    assert wire.session_reason is billed


def test_an_unknown_end_reason_is_rejected_when_read_not_guessed() -> None:
    good = SupplyEnded(
        cp_id="CP1", session_id=uuid4(), driver_id="D1", energy_kwh="1.000", reason="unplugged"
    )
    data = json.loads(good.model_dump_json())
    data["reason"] = "spilled coffee"
    with pytest.raises(BadEvent, match="reason"):
        parse_event(json.dumps(data))
