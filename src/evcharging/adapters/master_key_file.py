"""Central's master key on disk: the key that seals every CP key in the database.

Why a file of its own (not in the database, not in git): a stolen database, or a backup of it,
holds only sealed keys; whoever runs Central keeps this file (mode 0600) beside it.  It is made
on first start (32 random bytes, base64, written atomically with mode 0600), a file others can
read is refused, and the key is never logged.  `EV_MASTER_KEY` (base64 of 32 bytes) in the
environment takes its place where a file is not wanted (a secrets manager, a container).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from pathlib import Path

from evcharging.services.cp_keys import KEY_BYTES, MasterKey

log = logging.getLogger(__name__)

ENV_KEY = "EV_MASTER_KEY"
DEFAULT_PATH = Path(".evcharging") / "central-master.key"


class MasterKeyError(Exception):
    """The master key exists but cannot be used (readable by others, malformed, unreadable)."""


def load_or_create(path: Path, environ: dict[str, str] | None = None) -> MasterKey:
    """The master key: from EV_MASTER_KEY, else from `path`, else a new one written there."""
    env = os.environ if environ is None else environ
    if env.get(ENV_KEY):
        return MasterKey(_decode(env[ENV_KEY], ENV_KEY))
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        secret = MasterKey.generate()
        _write(path, secret)
        log.info("created a new master key at %s (keep it with Central; never in git)", path)
        return MasterKey(secret)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MasterKeyError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise MasterKeyError(f"cannot read the master key {path}: {exc}") from None
    return MasterKey(_decode(text, str(path)))


def _decode(text: str, where: str) -> bytes:
    try:
        secret = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        secret = b""
    if len(secret) != KEY_BYTES:
        raise MasterKeyError(f"{where} is not a master key (base64 of {KEY_BYTES} bytes)")
    return secret


def _write(path: Path, secret: bytes) -> None:
    folder = path.parent
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(base64.b64encode(secret).decode("ascii") + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, path)  # never replaces a key another Central made meanwhile
    except FileExistsError:
        log.info("master key %s made by another process meanwhile: using it", path)
    finally:
        tmp.unlink(missing_ok=True)
