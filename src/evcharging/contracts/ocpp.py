"""OCPP 1.6J's words as EV_OCPP reads them, and what each means in the network's vocabulary.

Why here: the gateway's core (`services/ocpp_gateway.py`) and its WebSocket adapter must read a
charger's statuses, stop reasons and meter values alike, and docs/ocpp.md documents this table.
Plain strings and dicts (as the `ocpp` package hands them over, keys in snake_case): nothing here
imports the `ocpp` package, so the core stays free of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from evcharging.contracts.end_reasons import SupplyEndReason

SUBPROTOCOL = "ocpp1.6"


class ChargerStatus(StrEnum):
    """OCPP 1.6 ChargePointStatus (StatusNotification.status)."""

    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EVSE = "SuspendedEVSE"
    SUSPENDED_EV = "SuspendedEV"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


class IdTagStatus(StrEnum):
    """OCPP 1.6 AuthorizationStatus (idTagInfo.status)."""

    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    EXPIRED = "Expired"
    INVALID = "Invalid"
    CONCURRENT_TX = "ConcurrentTx"


class BootStatus(StrEnum):
    """OCPP 1.6 RegistrationStatus (BootNotification.conf status)."""

    ACCEPTED = "Accepted"  # Central authenticated the CP: it is a CP of the network
    PENDING = "Pending"  # Central unreachable now: the charger asks again after `interval`
    REJECTED = "Rejected"  # not registered, or its credential is wrong


# StopTransaction.reason -> why the supply ended, as the network says it. A stop the gateway asked
# for (RemoteStopTransaction) keeps the reason Central gave; "Local" is OCPP's default (absent).
STOP_REASONS: dict[str, SupplyEndReason] = {
    "Local": SupplyEndReason.UNPLUGGED,
    "EVDisconnected": SupplyEndReason.UNPLUGGED,
    "Other": SupplyEndReason.UNPLUGGED,
    "Remote": SupplyEndReason.STOPPED_BY_DRIVER,
    "DeAuthorized": SupplyEndReason.STOPPED_BY_CENTRAL,
    "EmergencyStop": SupplyEndReason.CP_FAULT,
    "HardReset": SupplyEndReason.CP_FAULT,
    "SoftReset": SupplyEndReason.CP_FAULT,
    "PowerLoss": SupplyEndReason.CP_FAULT,
    "Reboot": SupplyEndReason.CP_FAULT,
    "UnlockCommand": SupplyEndReason.STOPPED_BY_CENTRAL,
}


def end_reason(ocpp_reason: str | None, asked: SupplyEndReason | None = None) -> SupplyEndReason:
    """Why a supply ended, from StopTransaction's reason (and the reason the gateway asked the
    charger to stop for, which wins for "Remote")."""
    if ocpp_reason in (None, "Remote") and asked is not None:
        return asked
    return STOP_REASONS.get(ocpp_reason or "Local", SupplyEndReason.UNPLUGGED)


# The energy register, in the order a reading is looked for. Import is what a charger delivers to
# the vehicle (and OCPP's default measurand); some chargers (ocpp-go's example among them) report
# their register as Export only, so that is read when Import is absent.
ENERGY_REGISTERS = ("Energy.Active.Import.Register", "Energy.Active.Export.Register")
_WH_PER_UNIT = {"Wh": Decimal(1), "kWh": Decimal(1000)}
MAX_REGISTER_WH = Decimal(10**12)  # 1 TWh: more is no charger's register (and a huge exponent
# would cost a huge integer, or overflow the decimal context)


class BadMeterValue(ValueError):
    """A sampled value that claims to be the register but cannot be read as one."""


def register_wh(meter_values: Sequence[Mapping[str, Any]]) -> int | None:
    """The largest energy-register reading in a MeterValues' `meter_value` list, in Wh; None when
    it carries none (only power, current, SoC ...).  Keys as the `ocpp` package gives them."""
    found: dict[str, list[int]] = {}
    for meter_value in meter_values:
        for sampled in meter_value.get("sampled_value") or ():
            measurand = sampled.get("measurand") or ENERGY_REGISTERS[0]
            if measurand not in ENERGY_REGISTERS or sampled.get("phase"):
                continue
            found.setdefault(measurand, []).append(_wh(sampled))
    for measurand in ENERGY_REGISTERS:
        if found.get(measurand):
            return max(found[measurand])
    return None


def _wh(sampled: Mapping[str, Any]) -> int:
    unit = sampled.get("unit") or "Wh"
    if unit not in _WH_PER_UNIT:
        raise BadMeterValue(f"energy register in {unit!r} (Wh or kWh expected)")
    if sampled.get("format") == "SignedData":
        raise BadMeterValue("a signed meter value (SignedData) is not read")
    try:
        value = Decimal(str(sampled.get("value")))
    except InvalidOperation:
        raise BadMeterValue(f"energy register {sampled.get('value')!r} is not a number") from None
    if not value.is_finite() or value < 0 or value > MAX_REGISTER_WH / _WH_PER_UNIT[unit]:
        raise BadMeterValue(f"energy register {str(value)[:20]} {unit} is not a reading")
    return int(value * _WH_PER_UNIT[unit])
