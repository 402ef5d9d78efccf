"""The weather rule of the Weather Control Office (EV_W): when a city's temperature puts its CPs
out of service, and when it gives them back.

The statement: below 0 °C an alert, above 0 °C again its cancellation. At exactly 0 °C the last
decision stands, so a reading that hovers at zero does not stop and restart a CP every 4 s.
"""

from __future__ import annotations

FREEZING_C = 0.0


def alert_after(temperature_c: float, alerted: bool) -> bool:
    """Whether a CP whose city reads `temperature_c` is under a weather alert, given whether it
    was (`alerted`)."""
    if temperature_c < FREEZING_C:
        return True
    if temperature_c > FREEZING_C:
        return False
    return alerted
