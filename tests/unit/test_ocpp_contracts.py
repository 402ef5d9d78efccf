"""OCPP 1.6J's words as EV_OCPP reads them: the energy register in MeterValues and the reason a
supply ended, from StopTransaction's reason."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evcharging.contracts.end_reasons import SupplyEndReason
from evcharging.contracts.ocpp import STOP_REASONS, BadMeterValue, end_reason, register_wh

IMPORT = "Energy.Active.Import.Register"
EXPORT = "Energy.Active.Export.Register"


def reading(value: str, **extra: Any) -> dict[str, Any]:
    return {"timestamp": "2026-12-02T02:00:05Z", "sampled_value": [{"value": value, **extra}]}


def sampled(*values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"timestamp": "2026-12-02T02:00:05Z", "sampled_value": list(values)}]


# --- register_wh ---------------------------------------------------------------------------


def test_a_plain_value_is_the_import_register_in_wh() -> None:
    assert register_wh([reading("1234")]) == 1234
    assert register_wh([reading("1234", measurand=IMPORT, unit="Wh")]) == 1234


def test_kwh_is_read_as_wh() -> None:
    assert register_wh([reading("1.5", unit="kWh")]) == 1500
    assert register_wh([reading("12.3456", unit="kWh")]) == 12345  # to the Wh, truncated


def test_import_is_preferred_over_export_and_export_read_when_alone() -> None:
    both = sampled(
        {"value": "9000", "measurand": EXPORT},
        {"value": "1000", "measurand": IMPORT},
    )
    assert register_wh(both) == 1000
    assert register_wh(sampled({"value": "7", "measurand": EXPORT, "unit": "kWh"})) == 7000


def test_per_phase_values_are_ignored() -> None:
    values = sampled(
        {"value": "99999", "measurand": IMPORT, "phase": "L1"},
        {"value": "1000", "measurand": IMPORT},
    )
    assert register_wh(values) == 1000
    assert register_wh(sampled({"value": "5", "phase": "L2"})) is None


def test_the_largest_reading_of_the_message_is_the_register() -> None:
    assert register_wh([reading("1000"), reading("1500"), reading("1200")]) == 1500


def test_no_energy_register_is_none() -> None:
    assert register_wh([]) is None
    assert register_wh([{"timestamp": "2026-12-02T02:00:05Z", "sampled_value": []}]) is None
    power_only = sampled(
        {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"},
        {"value": "55", "measurand": "SoC", "unit": "Percent"},
    )
    assert register_wh(power_only) is None


@pytest.mark.parametrize(
    "value",
    [
        {"value": "100", "unit": "W"},
        {"value": "100", "unit": "kvarh"},
        {"value": "abc"},
        {"value": ""},
        {"value": "-1"},
        {"value": "NaN"},
        {"value": "sNaN"},
        {"value": "Infinity"},
        {"value": "1E+999999999"},
        {"value": "1E+900000", "unit": "kWh"},
        {"value": "1000", "format": "SignedData"},
    ],
)
def test_a_register_that_cannot_be_read_is_a_bad_meter_value(value: dict[str, Any]) -> None:
    with pytest.raises(BadMeterValue):
        register_wh(sampled(value))


@given(
    value=st.text(max_size=30),
    unit=st.sampled_from([None, "Wh", "kWh", "W", ""]),
    measurand=st.sampled_from([None, IMPORT, EXPORT]),
)
def test_any_value_is_a_reading_or_a_bad_meter_value(
    value: str, unit: str | None, measurand: str | None
) -> None:
    """Whatever a charger writes in `value`, the answer is a Wh count or BadMeterValue (never
    another exception, which would be a CALLERROR InternalError and a warning per message)."""
    one: dict[str, Any] = {"value": value}
    if unit is not None:
        one["unit"] = unit
    if measurand is not None:
        one["measurand"] = measurand
    try:
        wh = register_wh(sampled(one))
    except BadMeterValue:
        return
    assert isinstance(wh, int)
    assert wh >= 0


@given(wh=st.integers(min_value=0, max_value=2**31 - 1))
def test_wh_and_kwh_agree(wh: int) -> None:
    as_kwh = str(Decimal(wh) / 1000)
    assert register_wh([reading(str(wh))]) == wh
    assert register_wh([reading(as_kwh, unit="kWh")]) == wh


# --- end_reason ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ocpp_reason", "expected"),
    [
        (None, SupplyEndReason.UNPLUGGED),  # absent: OCPP's default, Local
        ("Local", SupplyEndReason.UNPLUGGED),
        ("EVDisconnected", SupplyEndReason.UNPLUGGED),
        ("Other", SupplyEndReason.UNPLUGGED),
        ("Remote", SupplyEndReason.STOPPED_BY_DRIVER),
        ("DeAuthorized", SupplyEndReason.STOPPED_BY_CENTRAL),
        ("UnlockCommand", SupplyEndReason.STOPPED_BY_CENTRAL),
        ("EmergencyStop", SupplyEndReason.CP_FAULT),
        ("HardReset", SupplyEndReason.CP_FAULT),
        ("SoftReset", SupplyEndReason.CP_FAULT),
        ("PowerLoss", SupplyEndReason.CP_FAULT),
        ("Reboot", SupplyEndReason.CP_FAULT),
        ("SomethingNew", SupplyEndReason.UNPLUGGED),
    ],
)
def test_end_reason_of_a_stop_nobody_asked_for(
    ocpp_reason: str | None, expected: SupplyEndReason
) -> None:
    assert end_reason(ocpp_reason) is expected


def test_the_table_covers_every_reason_of_ocpp_1_6() -> None:
    ocpp_16 = {
        "EmergencyStop",
        "EVDisconnected",
        "HardReset",
        "Local",
        "Other",
        "PowerLoss",
        "Reboot",
        "Remote",
        "SoftReset",
        "UnlockCommand",
        "DeAuthorized",
    }
    assert set(STOP_REASONS) == ocpp_16


@given(asked=st.sampled_from(list(SupplyEndReason)))
def test_a_remote_stop_the_gateway_asked_for_keeps_its_reason(asked: SupplyEndReason) -> None:
    assert end_reason("Remote", asked) is asked
    assert end_reason(None, asked) is asked  # a charger that leaves the reason out
    assert end_reason("PowerLoss", asked) is SupplyEndReason.CP_FAULT  # what really happened
    assert end_reason("EVDisconnected", asked) is SupplyEndReason.UNPLUGGED
