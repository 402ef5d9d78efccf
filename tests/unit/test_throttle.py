"""domain.throttle.FailureThrottle: free failures, then doubling waits, capped; clocked from outside."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from evcharging.domain.throttle import FailureThrottle

CP, IP = "cp:CP1", "ip:10.0.0.7"
EPSILON = 1e-6


def test_the_free_failures_cost_nothing_then_each_wait_doubles_up_to_the_cap() -> None:
    throttle = FailureThrottle(free=3, first=1.0, cap=8.0)
    waits = [throttle.failed((CP,), now=100.0) for _ in range(8)]
    assert waits == [0, 0, 0, 1, 2, 4, 8, 8]
    assert throttle.wait((CP,), now=100.0) == 8
    assert throttle.wait((CP,), now=105.0) == 3
    assert throttle.wait((CP,), now=108.0) == 0


def test_an_attempt_waits_for_the_longer_of_its_keys() -> None:
    throttle = FailureThrottle(free=0, free_per_address=0, first=1.0, cap=60.0)
    throttle.failed((CP, IP), now=0.0)  # both: 1 s
    throttle.failed(("cp:CP2", IP), now=0.0)  # the address: 2 s
    assert throttle.wait((CP, IP), now=0.0) == 2
    assert throttle.wait((CP, "ip:10.0.0.8"), now=0.0) == 1
    assert throttle.wait(("cp:CP3", "ip:10.0.0.8"), now=0.0) == 0


def test_a_success_clears_the_cps_key_not_the_addresss() -> None:
    throttle = FailureThrottle(free=1, free_per_address=1, first=1.0, cap=60.0)
    for _ in range(3):
        throttle.failed((CP, IP), now=0.0)
    throttle.succeeded(CP)
    assert throttle.failures(CP) == 0
    assert throttle.failures(IP) == 3
    assert throttle.wait((CP, IP), now=0.0) == 2


def test_quiet_keys_are_forgotten_once_there_are_many() -> None:
    throttle = FailureThrottle(forget_after=900.0)
    for i in range(1100):
        throttle.failed((f"ip:10.0.{i // 256}.{i % 256}",), now=0.0)
    throttle.failed((CP,), now=1000.0)  # a failure sweeps the keys quiet for > 900 s
    assert throttle.failures("ip:10.0.0.1") == 0
    assert throttle.failures(CP) == 1


def test_unknown_keys_never_wait() -> None:
    assert FailureThrottle().wait(("cp:nobody", "ip:nowhere"), now=123.0) == 0


failures_at = st.lists(st.floats(min_value=0, max_value=10_000, allow_nan=False), max_size=40)


@settings(deadline=None)
@given(
    times=failures_at,
    free=st.integers(0, 5),
    first=st.floats(0.1, 10),
    cap=st.floats(1, 600),
    probe=st.floats(0, 20_000, allow_nan=False),
)
def test_waits_are_bounded_by_the_cap_and_never_grow_as_time_passes(
    times: list[float], free: int, first: float, cap: float, probe: float
) -> None:
    throttle = FailureThrottle(free=free, first=first, cap=cap)
    times = sorted(times)
    for at in times:
        assert 0 <= throttle.failed((CP, IP), now=at) <= cap
    now = max([*times, probe])
    wait = throttle.wait((CP, IP), now=now)
    assert 0 <= wait <= cap + EPSILON  # (now + delay) - now: float rounding only
    assert throttle.wait((CP, IP), now=now + 1) <= wait
    assert throttle.wait((CP, IP), now=now + cap + EPSILON) == 0
    if len(times) <= free:
        assert wait == 0


@settings(deadline=None)
@given(n=st.integers(1, 30), free=st.integers(0, 5))
def test_more_failures_never_mean_a_shorter_wait(n: int, free: int) -> None:
    throttle = FailureThrottle(free=free, first=1.0, cap=60.0)
    waits = [throttle.failed((CP,), now=0.0) for _ in range(n)]
    assert waits == sorted(waits)
    assert waits[: min(n, free)] == [0] * min(n, free)


def test_an_address_gets_more_free_failures_than_a_cp() -> None:
    """Many CPs share one host: a CP with a stale secret must not slow its neighbours' logins."""
    throttle = FailureThrottle()
    for i in range(throttle.free_per_address):
        throttle.failed((f"cp:CP{i}", "ip:10.0.0.2"), now=0.0)
    assert throttle.wait(("cp:OTHER", "ip:10.0.0.2"), now=0.0) == 0
    throttle.failed(("cp:CPX", "ip:10.0.0.2"), now=0.0)
    assert throttle.wait(("cp:OTHER", "ip:10.0.0.2"), now=0.0) > 0
