"""Central's roles by token: one check, every known token compared in constant time."""

from __future__ import annotations

import pytest

from evcharging.services import roles
from evcharging.services.roles import Role, Roles


def test_each_token_grants_its_role_and_nothing_else_does() -> None:
    known = Roles("admin-token", "weather-token")
    assert known.role_of("admin-token") is Role.ADMIN
    assert known.role_of("weather-token") is Role.WEATHER
    for nothing in ("", None, 42, "admin-toke", "admin-token ", "weather-token\\n"):
        assert known.role_of(nothing) is None
    assert known.has(Role.WEATHER)


def test_no_weather_token_means_nobody_is_the_weather_office() -> None:
    only_admin = Roles("admin-token")
    assert not only_admin.has(Role.WEATHER)
    assert only_admin.role_of("") is None
    assert Roles(None).role_of("anything") is None


def test_every_known_token_is_compared_whatever_matched(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []
    check = roles.token_matches

    def spy(given: str, expected: bytes) -> bool:
        compared.append(expected)
        return check(given, expected)

    monkeypatch.setattr(roles, "token_matches", spy)
    Roles("admin-token", "weather-token").role_of("admin-token")
    assert compared == [b"admin-token", b"weather-token"]


def test_the_two_tokens_must_differ() -> None:
    with pytest.raises(ValueError, match="must differ"):
        Roles("same", "same")
