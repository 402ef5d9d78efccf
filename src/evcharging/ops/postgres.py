"""A project-owned PostgreSQL server: Debian's binaries, our own data directory.

Why: two hosts (Central and the Registry) share one database in Release 2, and the tests and the
demo need a real PostgreSQL without touching the machine's Debian cluster (/var/lib/postgresql)
or Docker.  ``start`` runs ``initdb`` once into ``DATA_DIR/pgdata``, then ``pg_ctl start`` with
the host and port on the command line (so one data dir can move ports), creates the database and
returns its URL; ``stop`` is ``pg_ctl stop -m fast``.  Both are idempotent and serialised by a
lock file, so two callers never race one data dir.

Root: PostgreSQL refuses to run as root, so as root every server binary runs as the ``postgres``
system user (made by Debian's package) through ``runuser``, and the data dir is handed to it.

Authentication: ``trust`` on loopback (127.0.0.1, ::1) — this is a development and demo server,
the only local users are ours, and a URL without a password is never a secret in a log.  Any
other address (``--host 0.0.0.0`` for a second machine) needs ``scram-sha-256`` with the
password of the role ``evcharging``, generated once into ``DATA_DIR/pgpass`` (0600, libpq's
``PGPASSFILE`` format), so it never appears in a URL, a command line or a log.  No Unix socket:
clients use TCP, and two servers (ours and Debian's) never fight over /var/run/postgresql.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

SERVICE_USER = "postgres"  # Debian's package creates it; the server runs as it when we are root
APP_ROLE = "evcharging"
_WILDCARD = ("", "0.0.0.0", "::", "*")


class PostgresError(RuntimeError):
    """The server could not be found, started or stopped; the message says why."""


@dataclass
class ServerConfig:
    """Where the server listens and keeps its files; `settings` are extra ``-c`` options."""

    data_dir: Path = Path(".run/postgres")
    host: str = "127.0.0.1"
    port: int = 5433  # Debian's own cluster, when running, has 5432
    database: str = "evcharging"
    settings: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()

    @property
    def cluster(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def pgpass(self) -> Path:
        return self.data_dir / "pgpass"

    @property
    def client_host(self) -> str:
        """Where a client on this machine connects (a wildcard listen address is loopback)."""
        return "127.0.0.1" if self.host in _WILDCARD else self.host

    @property
    def url(self) -> str:
        """The database's URL for a client on this machine (loopback: trust, no password)."""
        host = self.client_host
        if ":" in host:
            host = f"[{host}]"
        user = SERVICE_USER if is_loopback(self.client_host) else APP_ROLE
        return f"postgresql://{user}@{host}:{self.port}/{self.database}"


# --- binaries and the user that runs them --------------------------------------------------------


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.parent.name))


def find_bin_dir() -> Path:
    """The newest Debian server (``/usr/lib/postgresql/<v>/bin``), else ``initdb`` on PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    raise PostgresError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's package: "
        "apt-get install postgresql"
    )


def _as_root() -> bool:
    return os.geteuid() == 0


def _run(
    cfg: ServerConfig, tool: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a server binary, as the ``postgres`` user when we are root (PostgreSQL refuses root)."""
    cmd = [str(find_bin_dir() / tool), *args]
    if _as_root():
        cmd = ["runuser", "-u", SERVICE_USER, "--", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cfg.data_dir)
    if check and done.returncode != 0:
        raise PostgresError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _hand_over(cfg: ServerConfig) -> None:
    """As root, give the data dir to the service user and prove it can reach it."""
    if not _as_root():
        return
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError as exc:
        raise PostgresError(
            f"no {SERVICE_USER!r} system user (Debian's postgresql package makes it)"
        ) from exc
    os.chown(cfg.data_dir, user.pw_uid, user.pw_gid)
    probe = ["runuser", "-u", SERVICE_USER, "--", "test", "-w", str(cfg.data_dir)]
    if subprocess.run(probe, check=False).returncode != 0:
        raise PostgresError(
            f"the {SERVICE_USER} user cannot write {cfg.data_dir}; choose a data dir whose "
            "parent folders others may enter (chmod o+x)"
        )


@contextlib.contextmanager
def _locked(cfg: ServerConfig) -> Iterator[None]:
    """Serialise start/stop on one data dir."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    with (cfg.data_dir / "server.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- the cluster ----------------------------------------------------------------------------------

_HBA = """\
# Written by evcharging (ops/postgres.py): trust on loopback, a password anywhere else.
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
host all {role} 0.0.0.0/0 scram-sha-256
host all {role} ::/0 scram-sha-256
"""


def _initdb(cfg: ServerConfig) -> None:
    """A new cluster: UTF-8 and the C collation, so text sorts byte-wise as on SQLite."""
    _hand_over(cfg)
    _run(
        cfg,
        "initdb",
        "-D",
        str(cfg.cluster),
        "-U",
        SERVICE_USER,
        "--encoding=UTF8",
        "--locale=C",
        "--auth=trust",
    )
    (cfg.cluster / "pg_hba.conf").write_text(_HBA.format(role=APP_ROLE))
    logger.info("initialised a PostgreSQL cluster in %s", cfg.cluster)


def _options(cfg: ServerConfig) -> str:
    settings = {
        # A specific outward address also listens on loopback: this host's own administration
        # (and only it) connects there, trusted, with no password to keep.
        "listen_addresses": "*"
        if cfg.host in _WILDCARD
        else (cfg.host if is_loopback(cfg.host) else f"{cfg.host},127.0.0.1"),
        "port": str(cfg.port),
        "unix_socket_directories": "",
        "password_encryption": "scram-sha-256",
        **cfg.settings,
    }
    return " ".join(
        f"-c {key}={value!r}" if value == "" else f"-c {key}={value}"
        for key, value in settings.items()
    )


def _postmaster(cfg: ServerConfig) -> tuple[int, int] | None:
    """(pid, port) of our running server, from its postmaster.pid; None when it is not running."""
    done = _run(cfg, "pg_ctl", "status", "-D", str(cfg.cluster), check=False)
    if done.returncode != 0:
        return None
    try:
        lines = (cfg.cluster / "postmaster.pid").read_text().splitlines()
        return int(lines[0]), int(lines[3])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _admin(cfg: ServerConfig) -> psycopg.Connection[tuple[object, ...]]:
    host = cfg.client_host if is_loopback(cfg.client_host) else "127.0.0.1"
    return psycopg.connect(
        host=host, port=cfg.port, user=SERVICE_USER, dbname="postgres", autocommit=True
    )


def _ensure_database(cfg: ServerConfig) -> None:
    """The database and the password role for remote clients (idempotent)."""
    with _admin(cfg) as conn:
        if (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (cfg.database,)).fetchone()
            is None
        ):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cfg.database)))
            logger.info("created database %s", cfg.database)
        if is_loopback(cfg.host):
            return  # only this machine can reach the server: trust, no role with a password
        password = _password(cfg)
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(APP_ROLE), sql.Literal(password)
            )
        )
        logger.info(
            "other hosts connect as postgresql://%s@<this host>:%s/%s with PGPASSFILE=%s",
            APP_ROLE,
            cfg.port,
            cfg.database,
            cfg.pgpass,
        )


def _password(cfg: ServerConfig) -> str:
    """The remote role's password, generated once into a 0600 pgpass file."""
    if cfg.pgpass.exists():
        return cfg.pgpass.read_text().strip().rsplit(":", 1)[1]
    password = secrets.token_urlsafe(24)
    fd = os.open(cfg.pgpass, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"*:*:*:{APP_ROLE}:{password}\n")
    logger.info("password of role %s written to %s (set PGPASSFILE to it)", APP_ROLE, cfg.pgpass)
    return password


# --- public commands ------------------------------------------------------------------------------


def start(cfg: ServerConfig, timeout: float = 60) -> str:
    """Start the server (or find ours running), create the database, return its URL."""
    with _locked(cfg):
        running = _postmaster(cfg)
        if running is not None:
            pid, port = running
            if port != cfg.port:
                raise PostgresError(
                    f"our server pid={pid} already runs on port {port}; stop it first"
                )
            logger.info("PostgreSQL already running pid=%s", pid)
        else:
            if _port_open(cfg.client_host, cfg.port):
                raise PostgresError(f"port {cfg.client_host}:{cfg.port} is used by another process")
            if not (cfg.cluster / "PG_VERSION").exists():
                _initdb(cfg)
            _hand_over(cfg)
            args = ["start", "-D", str(cfg.cluster), "-l", str(cfg.log_file), "-w"]
            done = _run(
                cfg, "pg_ctl", *args, "-t", str(int(timeout)), "-o", _options(cfg), check=False
            )
            if done.returncode != 0:
                raise PostgresError(f"PostgreSQL did not start:\n{_tail(cfg.log_file)}")
            logger.info("started PostgreSQL at %s:%s", cfg.host, cfg.port)
        _ensure_database(cfg)
    return cfg.url


def stop(cfg: ServerConfig, timeout: float = 30) -> bool:
    """Stop our server (fast shutdown: sessions are ended, data is safe); False if not running."""
    with _locked(cfg):
        if _postmaster(cfg) is None:
            return False
        _run(
            cfg,
            "pg_ctl",
            "stop",
            "-D",
            str(cfg.cluster),
            "-m",
            "fast",
            "-w",
            "-t",
            str(int(timeout)),
        )
        logger.info("stopped PostgreSQL in %s", cfg.cluster)
        return True


def status(cfg: ServerConfig) -> str:
    """One line for humans: is our server running, and where."""
    running = _postmaster(cfg)
    if running is None:
        return "not running"
    pid, port = running
    return f"running pid {pid} on port {port}"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} does not exist)"
    return text or f"({path} is empty)"


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches."""
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False
