"""Files only their owner may read (a CP's credentials, Central's master key): one way to write
them and one rule for refusing them.

Written atomically: a temporary file in the same folder, created with mode 0600, synced, then
moved into place (the folder is made 0700 if it is new), so a crash never leaves half a secret
and the secret is never readable by others, not even for a moment.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def shared_mode(mode: int) -> str | None:
    """Why a file with this mode is not private ("readable by other users (mode 644)"), or None."""
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"readable by other users (mode {stat.S_IMODE(mode):o})"
    return None


def write_private(path: Path, text: str, *, replace: bool = True) -> bool:
    """Writes `text` to `path` with mode 0600. With `replace=False` an existing file is kept
    (another process made it meanwhile) and False is returned."""
    folder = path.parent
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # fails if the file exists: never replaces it
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)
