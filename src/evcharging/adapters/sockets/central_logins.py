"""The gateway's Monitor side: one authenticated link to Central per charger (`CentralLogins`).

Each is exactly what EV_CP_M runs for its CP (`CentralLinkLoop` driven by a `MonitorService`):
SCRAM with the CP's secret (which never crosses the socket), the CP's key granted at AUTH_OK,
a heartbeat every second carrying the charger's health, FAULT/RECOVER when it changes, and a
fresh authentication after a key revocation (`auto_reauth`) or a rotation. There is no Engine
link: the key goes straight into the gateway's one codec, which seals every CP's events and opens
every CP's commands. Closing a link is what a dead Monitor does: Central shows Desconectado.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from evcharging.adapters.sockets.monitor_links import CentralLinkLoop, Timing
from evcharging.services.cp_auth import Prover
from evcharging.services.cp_keys import CpTopicCodec
from evcharging.services.monitor import CentralLink, MonitorService
from evcharging.services.ports import LoginOutcome, LoginState

log = logging.getLogger(__name__)


class _Secret:
    """The `Credentials` of a link: the secret the charger presented (or was enrolled with)."""

    def __init__(self, cp_id: str, secret: str) -> None:
        self._prover = Prover(cp_id, secret)

    def prover(self) -> Prover:
        return self._prover


@dataclass
class _Link:
    secret: str
    service: MonitorService
    loop: CentralLinkLoop
    changed: asyncio.Event
    task: asyncio.Task[None] | None = None
    installed: int | None = None  # the key version in the codec
    revocations: int = 0  # those handed to the codec
    keeper: asyncio.Task[None] | None = field(default=None, repr=False)


class CentralLinks:
    def __init__(
        self,
        central: tuple[str, int],
        codec: CpTopicCodec,
        *,
        timing: Timing | None = None,
        auto_reauth: float = 5.0,
        login_timeout: float = 10.0,
        at_once: int = 2,
    ) -> None:
        """`at_once`: logins in progress at a time. Each costs one scrypt (the SCRAM proof); a
        storm of chargers booting together would otherwise queue them all in the thread pool,
        and Central drops a login that does not answer its challenge in time (measured: Pending
        boots with 8 at once on a loaded machine)."""
        self.central = central
        self.codec = codec
        self.timing = timing or Timing()
        self.auto_reauth = auto_reauth
        self.login_timeout = login_timeout
        self._links: dict[str, _Link] = {}
        self._logging_in = asyncio.Semaphore(at_once)

    def up(self) -> list[str]:
        return sorted(c for c, k in self._links.items() if k.service.central is CentralLink.UP)

    async def login(self, cp_id: str, secret: str) -> LoginOutcome:
        link = self._links.get(cp_id)
        if link is not None and link.secret == secret and link.service.central is CentralLink.UP:
            return LoginOutcome(LoginState.ACCEPTED)
        if link is not None:
            await self.logout(cp_id)
        async with self._logging_in:
            return await self._login(cp_id, secret)

    async def _login(self, cp_id: str, secret: str) -> LoginOutcome:
        changed, wake = asyncio.Event(), asyncio.Event()

        def on_change() -> None:
            changed.set()
            wake.set()

        service = MonitorService(cp_id, on_change, auto_reauth=self.auto_reauth)
        service.engine_ok()  # the charger answered; its StatusNotifications say more
        loop = CentralLinkLoop(
            service, self.central, credentials=_Secret(cp_id, secret), timing=self.timing, wake=wake
        )
        link = self._links[cp_id] = _Link(secret, service, loop, changed)
        link.task = asyncio.create_task(loop.run(), name=f"central-link {cp_id}")
        outcome = await self._first_outcome(link)
        if outcome.state is LoginState.ACCEPTED:
            link.keeper = asyncio.create_task(self._keep(cp_id, link), name=f"keys {cp_id}")
        else:
            await self.logout(cp_id)
        return outcome

    async def _first_outcome(self, link: _Link) -> LoginOutcome:
        svc = link.service
        try:
            async with asyncio.timeout(self.login_timeout):
                while svc.central in (CentralLink.UNKNOWN, CentralLink.NOT_REGISTERED):
                    link.changed.clear()
                    await link.changed.wait()
        except TimeoutError:
            return LoginOutcome(LoginState.UNREACHABLE, "Central did not answer in time")
        if svc.central is CentralLink.UP:
            self._install(svc.cp_id, link)
            return LoginOutcome(LoginState.ACCEPTED)
        if svc.central is CentralLink.DENIED:
            return LoginOutcome(LoginState.DENIED, svc.central_reason)
        return LoginOutcome(
            LoginState.UNREACHABLE, f"Central unreachable at {self.central[0]}:{self.central[1]}"
        )

    async def _keep(self, cp_id: str, link: _Link) -> None:
        """For the link's life: new keys into the codec, revocations out of it."""
        while True:
            link.changed.clear()
            self._install(cp_id, link)
            await link.changed.wait()

    def _install(self, cp_id: str, link: _Link) -> None:
        svc, ring = link.service, self.codec.ring
        if svc.revocations > link.revocations:
            link.revocations = svc.revocations
            link.installed = None
            self.codec.revoked(cp_id)
            log.warning(
                "cp=%s: Central revoked the CP's keys: its events wait for a new one", cp_id
            )
        key = svc.key
        if key is None or key.version == link.installed:
            return
        if ring.get(cp_id, key.version) != key:
            if ring.current(cp_id) is None:  # a fresh or revoked ring: older keys never come
                ring.forget_floor(cp_id, key.version - 1)
            self.codec.guard.forget(cp_id, ring.install(key))
        link.installed = key.version
        log.info("cp=%s: key v%s from Central", cp_id, key.version)

    def health(self, cp_id: str, ok: bool, reason: str = "") -> None:
        link = self._links.get(cp_id)
        if link is None:
            return
        if ok:
            link.service.engine_ok()
        else:
            link.service.engine_ko(reason)

    async def logout(self, cp_id: str) -> None:
        link = self._links.pop(cp_id, None)
        if link is None:
            return
        tasks = [t for t in (link.task, link.keeper) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        for cp_id in list(self._links):
            await self.logout(cp_id)
