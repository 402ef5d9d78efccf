"""EV_W's client of API_Central v1: the weather office's few calls, with its own token.

    GET    /api/v1/weather/alerts            what Central has (at start, after an outage)
    PUT    /api/v1/weather/alerts/{cp_id}    {"city", "temperature_c"}: alert (idempotent)
    DELETE /api/v1/weather/alerts/{cp_id}    cancel (409: there was none, i.e. already done)
    PUT    /api/v1/weather/report            liveness and what the front shows
    DELETE /api/v1/weather/report            EV_W stopping cleanly

Why the rules here: the token is EV_W's write permission at Central, so it goes only in the
`Authorization` header, never in a message; over https the server is verified against
`--ca-file` (or the system's CAs), never `verify=False`.  Failures are of two kinds the caller
acts on differently: `CentralUnavailable` (no answer, a 5xx, or the token refused: retry with
backoff) and `CentralRefused` (Central answered no to this one call: 404 unknown CP, 422).
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from evcharging.adapters.openweather import redact
from evcharging.adapters.outbound_http import (
    base_url,
    fastapi_detail,
    one_line,
    quiet_http_logs,
    root_cause,
    tls_context,
)
from evcharging.services.weather_office import CentralAlert, CentralRefused, CentralUnavailable

log = logging.getLogger(__name__)

V1 = "/api/v1"


class CentralClient:
    """One Central, one connection pool (EV_W calls it every few seconds)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        ca_file: Path | None = None,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        quiet_http_logs()
        self.url = base_url(url)
        self._token = token
        verify: ssl.SSLContext | bool = True
        if self.url.startswith("https://"):
            verify = tls_context(ca_file)
        self._http = httpx.AsyncClient(
            base_url=self.url + V1,
            timeout=timeout,
            verify=verify,
            transport=transport,
            headers={"Authorization": f"Bearer {token}"},
            follow_redirects=False,
        )

    def __repr__(self) -> str:  # never the token
        return f"CentralClient(url={self.url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def alerts(self) -> dict[str, CentralAlert]:
        body = await self._json("GET", "/weather/alerts")
        if not isinstance(body, list):
            raise CentralUnavailable("Central's alert list is not understood")
        alerts: dict[str, CentralAlert] = {}
        for item in body:
            if not isinstance(item, dict) or not isinstance(item.get("cp_id"), str):
                raise CentralUnavailable("Central's alert list is not understood")
            temp = item.get("temperature_c")
            alerts[item["cp_id"]] = CentralAlert(
                item["cp_id"],
                str(item.get("city") or ""),
                float(temp)
                if isinstance(temp, int | float) and not isinstance(temp, bool)
                else None,
            )
        return alerts

    async def put_alert(self, cp_id: str, city: str, temperature_c: float) -> None:
        await self._call(
            "PUT", f"/weather/alerts/{_seg(cp_id)}", {"city": city, "temperature_c": temperature_c}
        )

    async def delete_alert(self, cp_id: str) -> bool:
        """True when cancelled now; False when Central had no alert (409: already cancelled)."""
        try:
            await self._call("DELETE", f"/weather/alerts/{_seg(cp_id)}")
        except CentralRefused as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def put_report(
        self, locations: list[dict[str, Any]], cps: dict[str, str], interval_s: float
    ) -> None:
        body = {"locations": locations, "cps": cps, "interval_s": interval_s}
        await self._call("PUT", "/weather/report", body)

    async def delete_report(self) -> None:
        await self._call("DELETE", "/weather/report")

    # --- the one way out -----------------------------------------------------------------------

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        response = await self._call(method, path, body)
        try:
            return response.json()
        except ValueError:
            raise CentralUnavailable(f"Central's answer to {method} {path} is not JSON") from None

    async def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.TimeoutException:
            raise CentralUnavailable(
                f"no answer within {self._http.timeout.read or 0:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise CentralUnavailable(self._unreachable(exc)) from None
        status = response.status_code
        if status < 300:
            return response
        detail = fastapi_detail(response)
        said = self._shown(
            f"{method} {V1}{path}: HTTP {status}" + (f" ({detail})" if detail else "")
        )
        if status in (401, 403):
            raise CentralUnavailable(f"Central refuses the weather token ({said})", status)
        if status >= 500 or (status in (404, 405) and not path.startswith("/weather/alerts/")):
            raise CentralUnavailable(said, status)  # not (yet) an API_Central v1 at that URL
        raise CentralRefused(said, status)

    def _unreachable(self, exc: httpx.TransportError) -> str:
        cause = root_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"Central's certificate is not trusted: {cause.verify_message or one_line(cause)}"
            )
        if isinstance(cause, ssl.SSLError):
            return f"TLS with Central failed: {one_line(cause)}"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        return self._shown(one_line(cause))

    def _shown(self, text: str) -> str:
        return redact(text, self._token)[:300]


def _seg(cp_id: str) -> str:
    return quote(cp_id, safe="")
