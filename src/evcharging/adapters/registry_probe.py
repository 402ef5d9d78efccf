"""Whether EV_Registry answers, as Central sees it: `GET /healthz` over HTTPS every 2 s.

The Registry's certificate is verified against the network's CA (`--registry-ca-file`, the
`ca.pem` of `evcharging certs init`), never skipped: a Registry that cannot prove who it is counts
as down. One failed probe is enough to say so (the probe is cheap and the front wants to know);
each change is told to Central's module health, which logs and audits it once.
"""

from __future__ import annotations

import asyncio
import ssl

import httpx

from evcharging.services.module_health import Health, Module, ModuleHealth

INTERVAL = 2.0  # seconds between two probes
TIMEOUT = 2.0  # seconds a probe may take


def _why(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return "its certificate is not signed by the CA given (--registry-ca-file)"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    return type(exc).__name__


class RegistryProbe:
    def __init__(
        self,
        url: str,
        tls: ssl.SSLContext,
        health: ModuleHealth,
        *,
        interval: float = INTERVAL,
        timeout: float = TIMEOUT,
    ) -> None:
        self.url = url.rstrip("/")
        self.tls = tls
        self.health = health
        self.interval = interval
        self.timeout = timeout

    async def probe(self) -> str | None:
        """None when the Registry answers 200; otherwise what is wrong."""
        try:
            async with httpx.AsyncClient(verify=self.tls, timeout=self.timeout) as client:
                answer = await client.get(f"{self.url}/healthz")
        except httpx.HTTPError as exc:
            return f"EV_Registry unreachable at {self.url}: {_why(exc)}"
        if answer.status_code != 200:
            return f"EV_Registry at {self.url} answered {answer.status_code}"
        return None

    def observe(self, problem: str | None) -> None:
        if problem is None:
            self.health.set(Module.REGISTRY, Health.UP, f"answering at {self.url}")
        else:
            self.health.set(Module.REGISTRY, Health.DOWN, problem)

    async def run(self) -> None:
        while True:
            self.observe(await self.probe())
            await asyncio.sleep(self.interval)
