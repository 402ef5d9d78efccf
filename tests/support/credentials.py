"""CP credentials for end-to-end tests: issued into Central's database as an operator would.

The Registry's own flow (HTTPS, EV_CP_M --register) is tested where the issue asks for it
(tests/e2e/test_registry_flow.py); every other end-to-end test needs its CPs registered without
one more process per test, so this issues the same verifier into the database and writes the same
0600 file the Monitor reads (its default path, under the program's working directory).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from evcharging.adapters.credentials_file import StoredCredentials, default_path, load, save
from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.services.cp_auth import make_verifier, new_secret


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
        secret = new_secret()
        verifier = make_verifier(secret)
        if not repo.enrol_cp(cp_id, location, price, verifier):
            repo.rotate_credentials(cp_id, verifier)
    finally:
        repo.close()
    credentials = StoredCredentials(cp_id=cp_id, secret=secret)
    save(path, credentials)
    return credentials
