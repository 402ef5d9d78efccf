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
from pathlib import Path

from evcharging.adapters.private_file import shared_mode, write_private
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
        if write_private(path, base64.b64encode(secret).decode("ascii") + "\n", replace=False):
            log.info("created a new master key at %s (keep it with Central; never in git)", path)
            return MasterKey(secret)
        mode = path.stat().st_mode  # another process made it meanwhile: that one is the key
    shared = shared_mode(mode)
    if shared is not None:
        raise MasterKeyError(f"{path} is {shared}; chmod 600 it")
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
