"""EV_W's locations file: which city each CP stands in, as YAML (`CP01: Madrid`).

Why its own adapter: the file is EV_W's memory across restarts and the marker may edit it by
hand, so a bad file is one clear line (never a traceback), and EV_W's own rewrites (after a menu
change) are atomic: a temporary file in the same folder, then moved into place, so a crash never
leaves half a file and a reader never sees one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from evcharging.contracts.fields import ID_RULE, is_valid_id

MAX_CITY = 100  # characters


class LocationsFileError(Exception):
    """The file cannot be used; `str()` is the one-line reason."""


def city_problem(city: str) -> str | None:
    """Why `city` cannot be a city name (empty, too long, a control character), or None."""
    if not city.strip():
        return "a city needs a name"
    if len(city) > MAX_CITY:
        return f"a city name is at most {MAX_CITY} characters"
    if any(not ch.isprintable() for ch in city):
        return "a city name cannot hold control characters"
    return None


def read_yaml_mapping(path: Path) -> dict[Any, Any] | None:
    """The file's YAML mapping; None when there is no file (an empty file is an empty mapping)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise LocationsFileError(f"cannot read {path}: {_why(exc)}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise LocationsFileError(f"{path} is not valid YAML{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LocationsFileError(f"{path} must be a YAML mapping such as `CP01: Madrid`")
    return data


def load(path: Path) -> dict[str, str] | None:
    """CP id -> city from `path`; None when the file does not exist yet."""
    data = read_yaml_mapping(path)
    if data is None:
        return None
    locations: dict[str, str] = {}
    for key, value in data.items():
        cp_id = str(key)
        if not is_valid_id(cp_id):
            raise LocationsFileError(f"{path}: {cp_id!r} is not a CP id ({ID_RULE})")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise LocationsFileError(f"{path}: {cp_id}'s city must be a name")
        city = str(value).strip()
        problem = city_problem(city)
        if problem:
            raise LocationsFileError(f"{path}: {cp_id}: {problem}")
        locations[cp_id] = city
    return locations


def save(path: Path, locations: Mapping[str, str]) -> None:
    """Writes the mapping atomically, sorted by CP id."""
    write_yaml_mapping(path, dict(sorted(locations.items())), "EV_W: the city of each CP")


def write_yaml_mapping(path: Path, mapping: Mapping[str, Any], title: str) -> None:
    """A YAML mapping written atomically (temporary file, fsync, rename), with a comment line."""
    body = yaml.safe_dump(dict(mapping), allow_unicode=True, sort_keys=False) if mapping else ""
    text = f"# {title}\n{body}"
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        with tmp.open("w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LocationsFileError(f"cannot write {path}: {_why(exc)}") from None


Stamp = tuple[int, int, int]


def stamp(path: Path) -> Stamp | None:
    """What tells a changed file from the one last read (mtime in ns, size, inode: an atomic
    rewrite within one mtime tick still shows); None without a file."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__
