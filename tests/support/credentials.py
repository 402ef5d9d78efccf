"""CP credentials for end-to-end tests: issued into Central's database as an operator would.

The Registry's own flow (HTTPS, EV_CP_M --register) is tested where the issue asks for it
(tests/e2e/test_registry_flow.py); every other end-to-end test needs its CPs registered without
one more process per test, so this runs the Registry's own `RegistryService.register` in-process
as the local operator (`evcharging cp enrol` does the same) and writes the 0600 file the Monitor
reads at its default path, under the program's working directory.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from evcharging.adapters.credentials_file import StoredCredentials, default_path, load, save
from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.domain.throttle import FailureThrottle
from evcharging.services.audit import Audit
from evcharging.services.registry import Caller, RegistryService


def provision(db: Path, workdir: Path, cp_id: str) -> StoredCredentials:
    """The CP registered with a fresh secret (kept when its file already exists: a restart)."""
    path = workdir / default_path(cp_id)
    existing = load(path)
    repo = SqliteRepository(db)
    try:
        if existing is not None and repo.get_verifier(cp_id) is not None:
            return existing
        record = repo.get_cp(cp_id)
        location = record.location if record else f"Test site {cp_id}"
        price = record.price_eur_per_kwh if record else Decimal("0.30")
        registry = RegistryService(repo, Audit([repo]), FailureThrottle())
        issued = registry.register(cp_id, location, price, Caller.operator())
    finally:
        repo.close()
    credentials = StoredCredentials(cp_id=cp_id, secret=issued.secret)
    save(path, credentials)
    return credentials
