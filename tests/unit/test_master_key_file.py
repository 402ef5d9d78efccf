"""Central's master key file: made once 0600, refused when others can read it, env override."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from evcharging.adapters.master_key_file import ENV_KEY, MasterKeyError, load_or_create
from evcharging.services.cp_keys import MasterKey, new_key


def test_the_first_start_makes_a_private_key_file_and_the_next_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "state" / "central-master.key"
    first = load_or_create(path, environ={})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    row = first.seal_key(new_key("CP1", 1))
    again = load_or_create(path, environ={})
    assert again.open_key("CP1", 1, row).version == 1


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "central-master.key"
    load_or_create(path, environ={})
    path.chmod(0o644)
    with pytest.raises(MasterKeyError, match="readable by other users"):
        load_or_create(path, environ={})


def test_a_malformed_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "central-master.key"
    path.write_text("not-a-key-at-all\n")
    path.chmod(0o600)
    with pytest.raises(MasterKeyError, match="is not a master key") as caught:
        load_or_create(path, environ={})
    assert "not-a-key-at-all" not in str(caught.value)


def test_the_environment_takes_the_files_place(tmp_path: Path) -> None:
    secret = MasterKey.generate()
    key = load_or_create(
        tmp_path / "absent.key", environ={ENV_KEY: base64.b64encode(secret).decode()}
    )
    assert not (tmp_path / "absent.key").exists()
    assert MasterKey(secret).open_key("CP1", 1, key.seal_key(new_key("CP1", 1))).cp_id == "CP1"
