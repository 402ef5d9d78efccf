"""A stand-in for API_Central's few /api/v1/weather endpoints, recording every request: the
tests of EV_W as a process use it (the end-to-end test with the real Central is elsewhere).

It follows the contract of issue 15: the weather token as a bearer on writes (none: 401, the
admin's: 403), an unknown CP 404, a DELETE of an alert that is not there 409, reports 204.
It runs uvicorn in a thread of the test process; `stop()` and `start()` again on the same port
make Central unreachable and back.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tests.support.ports import free_port
from tests.support.waiting import eventually_sync


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    authorization: str
    at: float


@dataclass
class RecordingCentral:
    token: str
    admin_token: str = "admin-token"
    known_cps: set[str] | None = None  # None: every CP id is known
    port: int = field(default_factory=free_port)
    requests: list[Recorded] = field(default_factory=list)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    failing: bool = False  # True: every request is recorded, then answered 503

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- what the tests look at ------------------------------------------------------------

    def seen(self, method: str, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def reports(self) -> list[Recorded]:
        return self.seen("PUT", "/api/v1/weather/report")

    def wait_for(self, method: str, path: str, timeout: float = 15.0, after: int = 0) -> Recorded:
        def found() -> Recorded | None:
            hits = self.seen(method, path)
            return hits[after] if len(hits) > after else None

        return eventually_sync(found, timeout, what=f"{method} {path} at the recording Central")

    def writes(self) -> list[tuple[str, str]]:
        with self._lock:
            return [
                (r.method, r.path)
                for r in self.requests
                if r.method in ("PUT", "DELETE") and "/alerts/" in r.path
            ]

    # --- running -------------------------------------------------------------------------------

    def start(self) -> None:
        config = uvicorn.Config(
            self._app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._server = server
        self._thread = threading.Thread(target=server.run, name="recording-central", daemon=True)
        self._thread.start()
        eventually_sync(lambda: server.started, 15, what="the recording Central to listen")

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
        self._server = self._thread = None

    # --- the endpoints -------------------------------------------------------------------------

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def record(request: Request, call_next: Any) -> Response:
            raw = await request.body()
            body: Any = json.loads(raw) if raw else None
            with self._lock:
                self.requests.append(
                    Recorded(
                        request.method,
                        request.url.path,
                        body,
                        request.headers.get("authorization", ""),
                        time.monotonic(),
                    )
                )
            if self.failing:
                return JSONResponse({"detail": "unavailable"}, status_code=503)
            response: Response = await call_next(request)
            return response

        def refused(request: Request) -> JSONResponse | None:
            auth = request.headers.get("authorization", "")
            if auth == f"Bearer {self.token}":
                return None
            if auth == f"Bearer {self.admin_token}":
                return JSONResponse(
                    {"detail": "the admin's token cannot write weather alerts"}, status_code=403
                )
            return JSONResponse(
                {"detail": "a weather token is needed"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )

        def cp_json(cp_id: str) -> dict[str, Any]:
            alert = self.alerts.get(cp_id)
            return {
                "id": cp_id,
                "weather_alert": alert is not None,
                "weather": alert
                and {"city": alert["city"], "temperature_c": alert["temperature_c"]},
            }

        @app.get("/api/v1/weather/alerts")
        async def alerts() -> list[dict[str, Any]]:
            with self._lock:
                return list(self.alerts.values())

        @app.put("/api/v1/weather/alerts/{cp_id}")
        async def put_alert(cp_id: str, request: Request) -> Response:
            if (no := refused(request)) is not None:
                return no
            if self.known_cps is not None and cp_id not in self.known_cps:
                return JSONResponse({"detail": f"unknown CP {cp_id}"}, status_code=404)
            body = await request.json()
            with self._lock:
                self.alerts[cp_id] = {
                    "cp_id": cp_id,
                    "city": body["city"],
                    "temperature_c": body["temperature_c"],
                }
            return JSONResponse(cp_json(cp_id))

        @app.delete("/api/v1/weather/alerts/{cp_id}")
        async def delete_alert(cp_id: str, request: Request) -> Response:
            if (no := refused(request)) is not None:
                return no
            with self._lock:
                if self.alerts.pop(cp_id, None) is None:
                    return JSONResponse({"detail": f"{cp_id} has no alert"}, status_code=409)
            return JSONResponse(cp_json(cp_id))

        @app.put("/api/v1/weather/report")
        async def put_report(request: Request) -> Response:
            return refused(request) or Response(status_code=204)

        @app.delete("/api/v1/weather/report")
        async def delete_report(request: Request) -> Response:
            return refused(request) or Response(status_code=204)

        return app
