"""A CP's credentials on disk: one JSON file, readable by the CP's user only (mode 0600).

Why a file: the Monitor must survive restarts without registering again, and an unattended CP
has nobody to type a secret.  The file is written atomically (a temporary file in the same
folder, created 0600, then renamed), so a crash never leaves half a secret; a file others can
read is refused with a clear reason rather than used.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from evcharging.adapters.private_file import shared_mode, write_private


class CredentialsFileError(Exception):
    """The file exists but cannot be used (unreadable, malformed, readable by others)."""


@dataclass(frozen=True, slots=True)
class StoredCredentials:
    cp_id: str
    secret: str
    registry: str = ""  # the Registry that issued it (https://host:port)
    issued_at: str = ""  # ISO 8601 UTC

    def __repr__(self) -> str:  # never print the secret, even by accident
        return f"StoredCredentials(cp_id={self.cp_id!r}, registry={self.registry!r})"


def default_path(cp_id: str) -> Path:
    return Path(".evcharging") / f"cp-{cp_id}.json"


def load(path: Path) -> StoredCredentials | None:
    """The credentials, or None when there is no file (not registered yet)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    shared = shared_mode(mode)
    if shared is not None:
        raise CredentialsFileError(f"{path} is {shared}; chmod 600 it or register again")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return StoredCredentials(
            cp_id=str(data["cp_id"]),
            secret=str(data["secret"]),
            registry=str(data.get("registry", "")),
            issued_at=str(data.get("issued_at", "")),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CredentialsFileError(f"{path} is not a credentials file: {exc}") from None


def save(path: Path, credentials: StoredCredentials) -> None:
    """Write atomically with mode 0600 (the folder is made 0700 if it is new)."""
    write_private(path, json.dumps(asdict(credentials)))


def remove(path: Path) -> bool:
    """After a deregistration: the secret is worthless, and is deleted."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
