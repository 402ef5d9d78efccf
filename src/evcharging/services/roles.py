"""Who a bearer token makes its caller: Central's roles (the admin, the weather office EV_W).

One home for the token check of every front door (the admin desk, the weather desk): a token is
compared with every token Central knows, always all of them and each in constant time
(`hmac.compare_digest`), so neither the time taken nor which comparison failed says anything
about a token's content. A known token of the wrong role is told apart from an unknown one: the
front doors answer it 403 ("not yours to do"), an unknown one 401.
"""

from __future__ import annotations

import hmac
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"  # Central's --admin-token: operators
    WEATHER = "weather"  # Central's --weather-token: EV_W


WHO = {Role.ADMIN: "the admin token", Role.WEATHER: "the weather office's token"}


def token_matches(given: str, expected: bytes) -> bool:
    """One comparison: constant time, so its length of match leaks nothing."""
    return hmac.compare_digest(given.encode(), expected)


class Roles:
    """The tokens Central knows, by role (a role without a token: nobody holds it)."""

    def __init__(self, admin: str | None, weather: str | None = None) -> None:
        if admin and weather and admin == weather:
            raise ValueError("the weather token must differ from the admin token")
        self._tokens = tuple(
            (role, token.encode())
            for role, token in ((Role.ADMIN, admin), (Role.WEATHER, weather))
            if token
        )

    def has(self, role: Role) -> bool:
        """Whether some token grants `role` (no weather token: every weather write is 401)."""
        return any(r is role for r, _ in self._tokens)

    def role_of(self, token: object) -> Role | None:
        """The role `token` grants, or None (none given, or unknown). Every known token is
        compared, whatever matched before."""
        if not isinstance(token, str) or not token:
            return None
        found: Role | None = None
        for role, expected in self._tokens:
            if token_matches(token, expected):
                found = role
        return found
