"""The rules of the fields every side accepts: ids, prices, locations, error types.

Why one module: the HTTP API, the admin WebSocket, the command lines and the Kafka events must
refuse the same bad value with the same rule, or a value one door lets in breaks at another (an
id the API takes but an event refuses).  Each rule is a pydantic `Annotated` type, usable as a
model field or through a `TypeAdapter`; `is_valid_id` is the same id rule for plain code.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import Field

MAX_ID = 64  # characters
ID_PATTERN = rf"[A-Za-z0-9_.:\-]{{1,{MAX_ID}}}"
"""The id rule as a regular expression that Python, pydantic, JavaScript and HTML's `pattern`
(whose `v` mode wants the `-` escaped) all read alike: the dashboards get it from here."""
ID_RULE = "1-64 of A-Z a-z 0-9 _ . : -"  # the id rule in words, for error messages
MAX_PRICE = Decimal(100)  # €/kWh
MAX_LOCATION = 200  # characters
MAX_ERROR_TYPE = 50  # characters

Id = Annotated[str, Field(pattern=rf"^{ID_PATTERN}$")]
"""A CP or driver id: 1 to 64 letters, digits, '_', '.', ':' or '-'."""

Price = Annotated[Decimal, Field(gt=0, le=MAX_PRICE)]
"""€/kWh: more than 0, at most 100."""

Location = Annotated[str, Field(min_length=1, max_length=MAX_LOCATION)]
"""Where a CP stands: 1 to 200 characters."""

ErrorType = Annotated[str, Field(min_length=1, max_length=MAX_ERROR_TYPE)]
"""The kind of error an admin simulates at a CP: 1 to 50 characters."""

_ID_RE = re.compile(ID_PATTERN)


def is_valid_id(text: str) -> bool:
    """The `Id` rule for plain code (whole string: a trailing newline is not allowed either)."""
    return _ID_RE.fullmatch(text) is not None
