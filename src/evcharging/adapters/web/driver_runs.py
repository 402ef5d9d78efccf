"""Services files run in the Driver process, not in the page (mechanic 12)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from evcharging.adapters.web.driver_views import Frame
from evcharging.services.driver import DriverService, ServiceResult
from evcharging.services.ports import DriverRefusal

log = logging.getLogger(__name__)


@dataclass
class _Run:
    cp_ids: tuple[str, ...]
    task: asyncio.Task[list[ServiceResult]]


class ServiceRuns:
    """Services files run in the process (mechanic 12): they go on when the page is closed."""

    def __init__(
        self,
        service: DriverService,
        pause: float,
        ready: Callable[[str], Awaitable[None]],
    ) -> None:
        self.service = service
        self.pause = pause
        self._ready = ready
        self._runs: dict[str, _Run] = {}

    def running(self, driver_id: str) -> bool:
        run = self._runs.get(driver_id)
        return run is not None and not run.task.done()

    def start(self, driver_id: str, cp_ids: list[str]) -> DriverRefusal | None:
        if self.running(driver_id):
            return DriverRefusal(f"a services file is already running for {driver_id}")
        task = asyncio.create_task(self._run(driver_id, cp_ids), name=f"services-{driver_id}")
        task.add_done_callback(self._ended)
        self._runs[driver_id] = _Run(tuple(cp_ids), task)
        return None

    async def _run(self, driver_id: str, cp_ids: list[str]) -> list[ServiceResult]:
        await self._ready(driver_id)  # so that no answer slips past the driver's reader
        log.info("driver=%s: %d service(s) to run", driver_id, len(cp_ids))
        return await self.service.run_services(driver_id, cp_ids, self.pause)

    def _ended(self, task: asyncio.Task[list[ServiceResult]]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def view(self, driver_id: str) -> Frame | None:
        run = self._runs.get(driver_id)
        if run is None:
            return None
        return {"running": not run.task.done(), "cp_ids": list(run.cp_ids)}

    async def close(self) -> None:
        tasks = [run.task for run in self._runs.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
