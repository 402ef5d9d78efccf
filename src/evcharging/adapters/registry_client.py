"""The Monitor's HTTPS client to EV_Registry (alta, baja, lookup of one CP).

Why its own adapter: the CP's secret travels here, so the rules are strict and in one place —
HTTPS only (an `http://` URL is refused before anything is sent), the server verified against a
CA file (or the system's CAs), never `verify=False`.  Every failure becomes a `RegistryError`
with a one-line reason an operator can act on (certificate not trusted, connection refused,
already registered, wrong secret, throttled, a field refused); the secret is never in a message.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from evcharging.adapters.outbound_http import (
    base_url,
    fastapi_detail,
    one_line,
    root_cause,
    tls_context,
)

log = logging.getLogger(__name__)

CPS = "/api/registry/cps"

M = TypeVar("M", bound=BaseModel)


class RegistryError(Exception):
    """The Registry could not do what was asked; `str()` is the one-line reason."""

    def __init__(
        self, reason: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status  # the HTTP status, when the Registry answered
        self.retry_after = retry_after  # seconds, on 429


def registry_url(value: str) -> str:
    """The Registry's base URL: HTTPS only (the CP's secret would travel in clear)."""
    if urlsplit(value.strip()).scheme == "http":
        raise ValueError("the Registry is reached over HTTPS only: use https://HOST:PORT")
    return base_url(value, https_only=True)


class _Answer(BaseModel):
    cp_id: str
    location: str
    price_eur_per_kwh: Decimal


class Registration(_Answer):
    """What an alta returns: the secret is shown once, here, and must be stored at once."""

    secret: str
    registered_at: str | None = None

    def __repr__(self) -> str:  # never print the secret, even by accident
        return f"Registration(cp_id={self.cp_id!r}, registered_at={self.registered_at!r})"

    __str__ = __repr__


class CpRecord(_Answer):
    registered: bool
    registered_at: str | None = None


@dataclass(frozen=True)
class RegistryClient:
    """One Registry; each call opens its own connection (a Monitor calls it a few times a day)."""

    url: str
    ca_file: Path | None = None
    timeout: float = 10.0

    def __post_init__(self) -> None:
        try:
            registry_url(self.url)
        except ValueError as exc:
            raise RegistryError(f"Registry {self.url!r}: {exc}") from None

    async def register(
        self, cp_id: str, location: str, price: Decimal | str, proof: str | None = None
    ) -> Registration:
        """Alta (201), or, with `proof` (this CP's current secret), a new secret (200)."""
        body = {"location": location, "price_eur_per_kwh": str(price)}
        response = await self._call("PUT", cp_id, json=body, secret=proof)
        if response.status_code not in (200, 201):
            raise self._refusal(response, cp_id)
        return self._parse(Registration, response)

    async def deregister(self, cp_id: str, secret: str) -> None:
        """Baja (204): the secret stops working at the Registry and at Central."""
        response = await self._call("DELETE", cp_id, secret=secret)
        if response.status_code not in (200, 204):
            raise self._refusal(response, cp_id)

    async def lookup(self, cp_id: str) -> CpRecord | None:
        """What the Registry knows of `cp_id`; None when it knows nothing."""
        response = await self._call("GET", cp_id)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._refusal(response, cp_id)
        return self._parse(CpRecord, response)

    # --- the one way out -----------------------------------------------------------------------

    def _tls(self) -> ssl.SSLContext:
        try:
            return tls_context(self.ca_file)
        except ValueError as exc:
            raise RegistryError(str(exc)) from None

    async def _call(
        self, method: str, cp_id: str, *, json: Any = None, secret: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"CP {secret}"} if secret else {}
        try:
            async with httpx.AsyncClient(
                base_url=self.url, verify=self._tls(), timeout=self.timeout
            ) as client:
                return await client.request(method, f"{CPS}/{cp_id}", json=json, headers=headers)
        except httpx.TimeoutException:
            raise RegistryError(
                f"the Registry at {self.url} did not answer within {self.timeout:g}s"
            ) from None
        except httpx.TransportError as exc:
            raise RegistryError(self._unreachable(exc)) from None

    def _unreachable(self, exc: httpx.TransportError) -> str:
        cause = root_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            trusted = f"CA file {self.ca_file}" if self.ca_file else "the system's CAs"
            detail = cause.verify_message or one_line(cause)
            return f"the Registry's certificate is not trusted ({trusted}): {detail}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS with the Registry at {self.url} failed: {one_line(cause)}"
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused by the Registry at {self.url}: is EV_Registry running?"
        return f"cannot reach the Registry at {self.url}: {one_line(cause)}"

    def _refusal(self, response: httpx.Response, cp_id: str) -> RegistryError:
        status = response.status_code
        detail = fastapi_detail(response)
        if status == 409:
            reason = (
                f"{cp_id} is already registered: deregister first or prove it "
                "(its credentials file, or an admin)"
            )
        elif status == 401:
            reason = f"the Registry refused {cp_id}'s credentials: {detail or 'wrong secret'}"
        elif status == 404:
            reason = f"{cp_id} is not registered at the Registry"
        elif status == 429:
            wait = _seconds(response.headers.get("Retry-After"))
            when = f"try again in {wait:g} s" if wait is not None else "try again later"
            return RegistryError(
                f"too many failed attempts at the Registry; {when}",
                status=status,
                retry_after=wait,
            )
        elif status == 422:
            reason = f"the Registry refused a field: {detail or 'invalid request'}"
        else:
            reason = f"the Registry answered HTTP {status}" + (f": {detail}" if detail else "")
        return RegistryError(reason, status=status)

    def _parse(self, model: type[M], response: httpx.Response) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise RegistryError(
                f"the Registry's answer is not understood ({exc.error_count()} bad fields)",
                status=response.status_code,
            ) from None


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
