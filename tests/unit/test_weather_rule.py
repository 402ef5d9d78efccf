"""The weather rule: below 0 °C an alert, above 0 °C its end, at 0 °C the last decision."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from evcharging.domain.weather import alert_after


def test_below_zero_is_an_alert_and_above_zero_is_none_whatever_came_before() -> None:
    for alerted in (False, True):
        assert alert_after(-0.1, alerted) is True
        assert alert_after(0.1, alerted) is False


def test_exactly_zero_keeps_the_last_decision() -> None:
    assert alert_after(0.0, True) is True
    assert alert_after(0.0, False) is False


@given(st.floats(allow_nan=False, allow_infinity=False), st.booleans())
def test_one_reading_decides_the_same_from_either_side_except_at_zero(
    t: float, alerted: bool
) -> None:
    if t != 0.0:
        assert alert_after(t, alerted) is alert_after(t, not alerted)
