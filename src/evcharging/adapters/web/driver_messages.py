"""What a driver page may send over its WebSocket, checked: one model per message type.

A message that is not one of them (bad JSON, unknown type, a bad id, a services file with no CP
id...) raises `BadInput` with a reason a person can act on: the hub answers it to the page.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evcharging.contracts.fields import Id
from evcharging.services.driver import parse_services

MAX_MESSAGE_CHARS = 64_000  # a services file of a few hundred lines fits
MAX_SERVICES = 100


class BadInput(ValueError):
    """A message the hub refuses; `reason` goes back to the page and into the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Inbound(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SelectDriver(_Inbound):
    type: Literal["select_driver"]
    driver_id: Id


class RequestSupply(_Inbound):
    type: Literal["request"]
    cp_id: Id
    driver_id: Id | None = None


class StopCharging(_Inbound):
    type: Literal["stop"]
    driver_id: Id | None = None


class RunServices(_Inbound):
    """Either `cp_ids`, or `text`: a services file (one CP id per line, `#` comments)."""

    type: Literal["run_services"]
    cp_ids: Annotated[list[Id], Field(min_length=1, max_length=MAX_SERVICES)] | None = None
    text: Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)] | None = None
    driver_id: Id | None = None

    def services(self) -> list[str]:
        if (self.cp_ids is None) == (self.text is None):
            raise BadInput("run_services needs either cp_ids or text")
        if self.cp_ids is not None:
            return list(self.cp_ids)
        try:
            cp_ids = parse_services(self.text or "")
        except ValueError as exc:
            raise BadInput(f"services file: {exc}") from None
        if not cp_ids:
            raise BadInput("services file: no CP id in it")
        if len(cp_ids) > MAX_SERVICES:
            raise BadInput(f"services file: {len(cp_ids)} services, at most {MAX_SERVICES}")
        return cp_ids


Inbound = SelectDriver | RequestSupply | StopCharging | RunServices
INBOUND: dict[str, type[Inbound]] = {
    "select_driver": SelectDriver,
    "request": RequestSupply,
    "stop": StopCharging,
    "run_services": RunServices,
}


def parse_inbound(text: str) -> Inbound:
    """One text frame from a page -> its message, or BadInput with a reason a person can act on."""
    if len(text) > MAX_MESSAGE_CHARS:
        raise BadInput(f"message too long ({len(text)} characters, at most {MAX_MESSAGE_CHARS})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise BadInput("not a JSON object")
    kind = data.get("type")
    model = INBOUND.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise BadInput(f"unknown message type {kind!r} (expected one of {', '.join(INBOUND)})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadInput(f"invalid {kind}: {_summarise(exc)}") from None


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
