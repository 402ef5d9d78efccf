"""A CP's credentials file: 0600, written atomically, refused when others can read it or when it
is not a credentials file, and its secret never shown by repr."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from evcharging.adapters import credentials_file
from evcharging.adapters.credentials_file import CredentialsFileError, StoredCredentials

SECRET = "s3cret-never-shown"
CREDS = StoredCredentials("CP01", SECRET, "https://registry:8443", "2025-01-02T14:03:05+00:00")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_saved_0600_in_a_new_0700_folder_and_loaded_back(tmp_path: Path) -> None:
    path = tmp_path / "new" / "cp-CP01.json"
    credentials_file.save(path, CREDS)

    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert json.loads(path.read_text()) == {
        "cp_id": "CP01",
        "secret": SECRET,
        "registry": "https://registry:8443",
        "issued_at": "2025-01-02T14:03:05+00:00",
    }
    assert credentials_file.load(path) == CREDS


def test_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        credentials_file.save(tmp_path / "c.json", CREDS)
    finally:
        os.umask(old)
    assert mode(tmp_path / "c.json") == 0o600


def test_written_atomically_replacing_the_old_file_and_leaving_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.json"
    credentials_file.save(path, CREDS)
    rotated = StoredCredentials("CP01", "new-secret", CREDS.registry, CREDS.issued_at)

    def crash(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="No space"):
        credentials_file.save(path, rotated)
    assert credentials_file.load(path) == CREDS  # the old secret, whole
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temporary left

    monkeypatch.undo()
    credentials_file.save(path, rotated)
    assert credentials_file.load(path) == rotated
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_no_file_means_not_registered(tmp_path: Path) -> None:
    assert credentials_file.load(tmp_path / "none.json") is None
    assert credentials_file.remove(tmp_path / "none.json") is False


def test_removed_after_a_deregistration(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    credentials_file.save(path, CREDS)
    assert credentials_file.remove(path) is True
    assert not path.exists()


@pytest.mark.parametrize("bits", [0o640, 0o604, 0o620, 0o660, 0o644])
def test_a_file_others_can_use_is_refused(tmp_path: Path, bits: int) -> None:
    path = tmp_path / "c.json"
    credentials_file.save(path, CREDS)
    path.chmod(bits)
    with pytest.raises(CredentialsFileError, match=f"mode {bits:o}.*chmod 600"):
        credentials_file.load(path)


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"secret": "x"}', '{"cp_id": "CP01"}', "", '"just a string"'],
)
def test_a_malformed_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(CredentialsFileError, match="is not a credentials file") as caught:
        credentials_file.load(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_repr_and_str_hide_the_secret() -> None:
    assert SECRET not in repr(CREDS)
    assert SECRET not in str(CREDS)
    assert SECRET not in f"{CREDS!r} {[CREDS]}"
    assert "CP01" in repr(CREDS)


def test_the_default_path_is_per_cp_under_dot_evcharging() -> None:
    assert credentials_file.default_path("CP01") == Path(".evcharging/cp-CP01.json")
