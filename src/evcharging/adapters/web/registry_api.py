"""EV_Registry's REST API (FastAPI, served only over HTTPS by `apps/registry.py`).

    PUT    /api/registry/cps/{cp_id}   alta (201) or, with proof, rotation (200): the secret, once
    DELETE /api/registry/cps/{cp_id}   baja (204), with proof
    GET    /api/registry/cps/{cp_id}   consulta: location, price, registered (no secrets)
    GET    /api/registry/cps           every CP
    GET    /healthz                    the Registry is up

Proof is the `Authorization` header: `CP <secret>` (the CP itself) or `Bearer <admin token>`.
The rules are `services/registry.py`'s; this module only translates.  The endpoints are plain
`def`s on purpose: FastAPI runs them in worker threads, so the scrypt of a proof or a new
verifier never stalls the event loop (and the TLS handshakes it serves).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel

from evcharging.contracts.fields import ID_PATTERN, is_valid_id
from evcharging.services.audit import UNKNOWN_IP
from evcharging.services.registry import (
    AdminToken,
    Caller,
    CPSecret,
    Proof,
    Refusal,
    RegistrationBody,
    RegistryRefusal,
    RegistryService,
    Unreadable,
)

log = logging.getLogger(__name__)

DESCRIPTION = """Alta, baja and consulta of charging points, over HTTPS only.

A new CP registers with `PUT /api/registry/cps/{cp_id}` and receives its **secret once**, in
the answer: keep it (the Monitor writes it to its credentials file, mode 0600); the Registry
keeps only a verifier. Registering a registered CP again, or deregistering it, needs proof in the
`Authorization` header: `CP <secret>` (the CP's current secret) or `Bearer <admin token>`; a
registration with proof rotates the secret (the old one stops working at once). Wrong proofs are
answered 401, and after a few of them 429 with `Retry-After`. Every change and every refusal is
in the audit log, with the caller's IP; no secret ever is."""


class Problem(BaseModel):
    """Every 4xx answer but 422 (whose `detail` lists the invalid fields)."""

    detail: str


class IssuedJson(BaseModel):
    cp_id: str
    secret: str
    location: str
    price_eur_per_kwh: str
    registered_at: str | None


class RegistryCPJson(BaseModel):
    cp_id: str
    location: str
    price_eur_per_kwh: str
    registered: bool
    registered_at: str | None


def _answer(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


_STATUS = {
    Refusal.INVALID: 422,
    Refusal.NOT_FOUND: 404,
    Refusal.ALREADY_REGISTERED: 409,
    Refusal.PROOF_REQUIRED: 401,
    Refusal.WRONG_PROOF: 401,
    Refusal.THROTTLED: 429,
}
_CHALLENGE = {"WWW-Authenticate": 'CP realm="EV_Registry", Bearer realm="EV_Registry"'}
NO_STORE = {"Cache-Control": "no-store"}  # an answer with a secret is never cached

UNAUTHORISED = _answer("Wrong or unreadable proof (`detail` says which)")
THROTTLED = _answer("Too many failed proofs from this CP or address: wait `Retry-After` s")

_authorization = APIKeyHeader(
    name="Authorization",
    scheme_name="Proof",
    description="`CP <secret>` (the CP itself) or `Bearer <admin token>`",
    auto_error=False,
)


def proof_of(header: str | None) -> Proof | None:
    """The `Authorization` header as a proof; an unknown scheme is refused, not guessed at."""
    if not header or not header.strip():
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "cp" and value:
        return CPSecret(value)
    if scheme.lower() == "bearer" and value:
        return AdminToken(value)
    return Unreadable("unreadable Authorization: use 'CP <secret>' or 'Bearer <admin token>'")


def peer_ip(request: Request) -> str:
    """The TCP peer's address (what the audit log records: no header a client could forge)."""
    return request.client.host if request.client else UNKNOWN_IP


def caller_of(
    request: Request, authorization: Annotated[str | None, Depends(_authorization)]
) -> Caller:
    return Caller(peer_ip(request), proof_of(authorization))


CallerDep = Annotated[Caller, Depends(caller_of)]
CPId = Annotated[str, Path(pattern=rf"^{ID_PATTERN}$", description="1-64 of A-Z a-z 0-9 _ . : -")]

_OPS = {"PUT": "register", "DELETE": "deregister"}


def create_app(service: RegistryService) -> FastAPI:
    # FastAPIOffline serves Swagger UI's files from its package: /docs needs no network. ReDoc is
    # off: its page still loads a logo from its CDN.
    app = FastAPIOffline(
        title="EV_Registry API",
        version="1",
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        static_url="/static/docs",
    )
    app.state.registry = service

    @app.exception_handler(RegistryRefusal)
    async def refused(request: Request, exc: RegistryRefusal) -> JSONResponse:
        """Audited and logged by the service already."""
        headers: dict[str, str] = {}
        if exc.kind in (Refusal.PROOF_REQUIRED, Refusal.WRONG_PROOF):
            headers.update(_CHALLENGE)
        if exc.retry_after_seconds is not None:
            headers["Retry-After"] = str(exc.retry_after_seconds)
        return JSONResponse({"detail": exc.reason}, status_code=_STATUS[exc.kind], headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """A body FastAPI could not read: audited (registry.refused) like any refusal."""
        errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()]
        reason = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in errors
        )
        cp_id = request.path_params.get("cp_id")
        op = _OPS.get(request.method, "read")
        caller = Caller(peer_ip(request))
        await run_in_threadpool(
            service.refuse_input,
            cp_id if cp_id and is_valid_id(cp_id) else None,
            caller,
            reason,
            op,
        )
        return JSONResponse({"detail": errors}, status_code=422)

    @app.put(
        "/api/registry/cps/{cp_id}",
        status_code=201,
        response_model=IssuedJson,
        responses={
            200: {"model": IssuedJson, "description": "Registered already: secret rotated"},
            401: UNAUTHORISED,
            409: _answer("Registered already, and no proof given: nothing changed"),
            429: THROTTLED,
        },
    )
    def register(cp_id: CPId, body: RegistrationBody, caller: CallerDep) -> JSONResponse:
        """Alta (201) or, with proof, a new secret for a registered CP (200). The answer holds
        the CP's secret: the only time it is ever shown."""
        issued = service.register(cp_id, body.location, body.price_eur_per_kwh, caller)
        return JSONResponse(
            IssuedJson.model_validate(issued.json).model_dump(),
            status_code=200 if issued.rotated else 201,
            headers=NO_STORE,
        )

    @app.delete(
        "/api/registry/cps/{cp_id}",
        status_code=204,
        responses={
            401: UNAUTHORISED,
            404: _answer("Not registered"),
            429: THROTTLED,
        },
    )
    def deregister(cp_id: CPId, caller: CallerDep) -> Response:
        """Baja: the CP's credentials deleted (its history stays); needs proof."""
        service.deregister(cp_id, caller)
        return Response(status_code=204)

    @app.get("/api/registry/cps/{cp_id}", responses={404: _answer("Unknown CP")})
    def get_cp(cp_id: str) -> RegistryCPJson:
        view = service.get(cp_id)
        if view is None:
            raise HTTPException(status_code=404, detail=f"unknown CP {cp_id}")
        return RegistryCPJson.model_validate(view.json)

    @app.get("/api/registry/cps")
    def list_cps() -> list[RegistryCPJson]:
        return [RegistryCPJson.model_validate(view.json) for view in service.cps()]

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
