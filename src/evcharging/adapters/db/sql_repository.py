"""The Repository port in SQL, written once for both databases: SQLite and PostgreSQL.

The queries use `?` placeholders and portable SQL; a small `Dialect` says what differs (the
placeholder style, how a write transaction begins, row locks, serialising the change feed, the
integrity error type).  `SqliteRepository` (sqlite_repository.py) and `PostgresRepository`
(postgres_repository.py) only open their connection and migrate it.

Both connections are synchronous, in autocommit mode, with explicit transactions (`_tx`) where a
use case writes more than one row.  Why synchronous: the services call the Repository port
synchronously from the event loop, so one implementation serves both databases and every use
case stays one atomic call.  The cost, on PostgreSQL: each statement is a network round trip
during which the event loop waits (about 0.1-0.3 ms on loopback, more across hosts), and a slow
or unreachable server stalls the whole program until it answers or the connection fails.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from evcharging.contracts.audit import AuditAction, Outcome
from evcharging.domain.money import euros, from_cents, kwh, to_cents
from evcharging.domain.records import CPRecord, DriverRecord
from evcharging.domain.session import EndReason, Session, SessionStatus
from evcharging.services.audit import AuditEntry, AuditQuery
from evcharging.services.cp_auth import KdfParams, Verifier, b64, unb64
from evcharging.services.ports import RegistryChange, RegistryChangeKind, StoredCpKey

log = logging.getLogger(__name__)

_SESSION_COLUMNS = (
    "session_id, driver_id, cp_id, price_eur_per_kwh, status, started_at, ended_at, "
    "energy_wh, amount_cents, end_reason"
)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _wh(energy: Decimal) -> int:
    return int(kwh(energy) * 1000)


def _ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True)
class Dialect:
    """What differs between the databases, for the same queries."""

    name: str
    placeholder: str  # "?" (sqlite3) or "%s" (psycopg)
    begin: str  # how a write transaction starts
    for_update: str  # appended to a SELECT whose row the transaction then changes
    lock_changes: str | None  # serialises writers of registry_changes (None: they already are)
    integrity_error: type[Exception] | tuple[type[Exception], ...]

    def sql(self, query: str) -> str:
        return query if self.placeholder == "?" else _translated(query, self.placeholder)


@lru_cache(maxsize=256)
def _translated(query: str, placeholder: str) -> str:
    return query.replace("?", placeholder)


class _Db:
    """The connection, speaking the dialect: queries are written once, with `?`.

    With `reopen` (PostgreSQL), a connection found closed (the server restarted, the network
    dropped it) is opened again before the next statement outside a transaction: the call
    that lost it failed, the ones after it work.  Nothing is retried, so nothing runs twice."""

    def __init__(self, conn: Any, dialect: Dialect, reopen: Callable[[], Any] | None) -> None:
        self.conn = conn
        self._dialect = dialect
        self._reopen = reopen
        self.in_tx = False

    def execute(self, query: str, args: Sequence[Any] = ()) -> Any:
        if self._reopen is not None and not self.in_tx and self.conn.closed:
            log.warning("the database connection was lost; connecting again")
            self.conn = self._reopen()
        if not args:  # psycopg reads "%" as a placeholder only when there are parameters
            return self.conn.execute(query)
        return self.conn.execute(self._dialect.sql(query), args)

    def executemany(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.cursor().executemany(self._dialect.sql(query), rows)


class _Refused(Exception):
    """Raised inside `_tx` to roll back a use case that found it must change nothing."""


class SqlRepository:
    """One connection, used from one event loop thread; every write is its own transaction."""

    schema_version: int

    def __init__(
        self, conn: Any, dialect: Dialect, reopen: Callable[[], Any] | None = None
    ) -> None:
        self._dialect = dialect
        self._db = _Db(conn, dialect, reopen)

    @property
    def _conn(self) -> Any:
        """The driver's connection (sqlite3 or psycopg), for tests and migrations."""
        return self._db.conn

    @property
    def dialect(self) -> str:
        return self._dialect.name

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[_Db]:
        self._db.execute(self._dialect.begin)
        self._db.in_tx = True
        try:
            yield self._db
        except BaseException:
            if not getattr(self._db.conn, "closed", False):  # a lost one has nothing to undo
                self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._db.in_tx = False

    # --- charging points ---------------------------------------------------------------

    def add_cp(self, cp_id: str, location: str, price: Decimal) -> CPRecord | None:
        """A new CP; None (and nothing changed) when the id is already registered."""
        with self._tx() as c:
            added = c.execute(
                "INSERT INTO charging_points (cp_id, location, price_eur_per_kwh, registered_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (cp_id) DO NOTHING",
                (cp_id, location, str(price), _now()),
            ).rowcount
        return self.get_cp(cp_id) if added else None

    def upsert_cp(self, cp_id: str, location: str, price: Decimal) -> CPRecord:
        """The seed file's CP: added, or its location and price set (seeding is idempotent)."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO charging_points (cp_id, location, price_eur_per_kwh, registered_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (cp_id) DO UPDATE SET "
                "location = excluded.location, price_eur_per_kwh = excluded.price_eur_per_kwh",
                (cp_id, location, str(price), _now()),
            )
        record = self.get_cp(cp_id)
        assert record is not None
        return record

    def update_cp(
        self, cp_id: str, location: str | None = None, price: Decimal | None = None
    ) -> CPRecord | None:
        """Sets what is given of a registered CP's location and price; None for an unknown CP."""
        with self._tx() as c:
            found = c.execute(
                "UPDATE charging_points SET location = COALESCE(?, location), "
                "price_eur_per_kwh = COALESCE(?, price_eur_per_kwh) WHERE cp_id = ?",
                (location, None if price is None else str(price), cp_id),
            ).rowcount
        return self.get_cp(cp_id) if found else None

    def get_cp(self, cp_id: str) -> CPRecord | None:
        row = self._db.execute("SELECT * FROM charging_points WHERE cp_id = ?", (cp_id,)).fetchone()
        return None if row is None else self._cp(row)

    def list_cps(self) -> list[CPRecord]:
        rows = self._db.execute("SELECT * FROM charging_points ORDER BY cp_id").fetchall()
        return [self._cp(r) for r in rows]

    def set_cp_stopped(self, cp_id: str, stopped: bool) -> None:
        self._db.execute(
            "UPDATE charging_points SET admin_state = ? WHERE cp_id = ?",
            ("stopped" if stopped else "active", cp_id),
        )

    def set_cp_error_simulated(self, cp_id: str, on: bool) -> None:
        self._db.execute(
            "UPDATE charging_points SET error_simulated = ? WHERE cp_id = ?", (int(on), cp_id)
        )

    @staticmethod
    def _cp(row: Any) -> CPRecord:
        return CPRecord(
            cp_id=row["cp_id"],
            location=row["location"],
            price_eur_per_kwh=Decimal(row["price_eur_per_kwh"]),
            admin_stopped=row["admin_state"] == "stopped",
            error_simulated=bool(row["error_simulated"]),
            keys_revoked=bool(row["keys_revoked"]),
            weather_alert=bool(row["weather_alert"]),
            weather_city=row["weather_city"],
            weather_temperature_c=(
                None
                if row["weather_temperature_c"] is None
                else float(row["weather_temperature_c"])
            ),
        )

    # --- drivers -----------------------------------------------------------------------

    def upsert_driver(self, driver_id: str, name: str, balance: Decimal) -> None:
        """Seeding twice keeps one row and the balance it has earned since."""
        self._db.execute(
            "INSERT INTO drivers (driver_id, name, balance_cents) VALUES (?, ?, ?) "
            "ON CONFLICT (driver_id) DO UPDATE SET name = excluded.name",
            (driver_id, name, to_cents(balance)),
        )

    def list_drivers(self) -> list[DriverRecord]:
        rows = self._db.execute("SELECT * FROM drivers ORDER BY driver_id").fetchall()
        return [
            DriverRecord(r["driver_id"], r["name"], from_cents(r["balance_cents"])) for r in rows
        ]

    def get_driver(self, driver_id: str) -> DriverRecord | None:
        row = self._db.execute("SELECT * FROM drivers WHERE driver_id = ?", (driver_id,)).fetchone()
        if row is None:
            return None
        return DriverRecord(row["driver_id"], row["name"], from_cents(row["balance_cents"]))

    # --- sessions ----------------------------------------------------------------------

    def create_session(self, session: Session, request_id: str | None) -> bool:
        """False when the CP or the driver already has an open session, or the request was seen."""
        try:
            self._db.execute(
                "INSERT INTO sessions (session_id, request_id, driver_id, cp_id, price_eur_per_kwh, "
                "status, started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    session.session_id,
                    request_id,
                    session.driver_id,
                    session.cp_id,
                    str(session.price_eur_per_kwh),
                    session.status.value,
                    session.started_at.isoformat(),
                ),
            )
        except self._dialect.integrity_error:
            return False
        return True

    def session_by_request(self, request_id: str) -> Session | None:
        return self._one_session("request_id = ?", request_id)

    def get_session(self, session_id: str) -> Session | None:
        return self._one_session("session_id = ?", session_id)

    def open_sessions(self) -> list[Session]:
        return self._sessions("status != 'ended'", ())

    def mark_supplying(self, session_id: str) -> None:
        self._db.execute(
            "UPDATE sessions SET status = 'supplying' WHERE session_id = ? AND status = 'authorised'",
            (session_id,),
        )

    def record_energies(self, readings: Sequence[tuple[str, Decimal, Decimal]]) -> None:
        """Many sessions' running figures in one transaction, so a Central crash loses no supplied
        energy; a stale reading never lowers them, and an ended session is left alone."""
        with self._tx() as c:
            c.executemany(
                "UPDATE sessions SET amount_cents = CASE WHEN ? >= energy_wh THEN ? ELSE amount_cents END, "
                "energy_wh = CASE WHEN ? > energy_wh THEN ? ELSE energy_wh END WHERE session_id = ? AND status != 'ended'",
                [(_wh(e), to_cents(a), _wh(e), _wh(e), sid) for sid, e, a in readings],
            )

    def close_session(self, ended: Session) -> Decimal | None:
        """End the session and debit the driver in one transaction; None if it had ended already."""
        assert ended.status is SessionStatus.ENDED
        assert ended.ended_at
        assert ended.end_reason
        with self._tx() as c:
            cur = c.execute(
                "UPDATE sessions SET status = 'ended', ended_at = ?, energy_wh = ?, amount_cents = ?, "
                "end_reason = ? WHERE session_id = ? AND status != 'ended'",
                (
                    ended.ended_at.isoformat(),
                    _wh(ended.energy_kwh),
                    to_cents(ended.amount_eur),
                    ended.end_reason.value,
                    ended.session_id,
                ),
            )
            if cur.rowcount != 1:
                return None
            c.execute(
                "UPDATE drivers SET balance_cents = balance_cents - ? WHERE driver_id = ?",
                (to_cents(ended.amount_eur), ended.driver_id),
            )
            row = c.execute(
                "SELECT balance_cents FROM drivers WHERE driver_id = ?", (ended.driver_id,)
            ).fetchone()
        return from_cents(row["balance_cents"])

    def amend_energy(self, session_id: str, energy_kwh: Decimal, amount: Decimal) -> Decimal | None:
        """A closed session's meter read more than was billed: bill the difference, exactly once.

        Only a larger reading changes anything, so a repeated correction debits nothing.
        Returns the driver's new balance, or None if nothing changed."""
        with self._tx() as c:
            row = c.execute(
                "SELECT driver_id, amount_cents FROM sessions WHERE session_id = ? "
                "AND status = 'ended' AND energy_wh < ?" + self._dialect.for_update,
                (session_id, _wh(energy_kwh)),
            ).fetchone()
            if row is None:
                return None
            extra = to_cents(amount) - row["amount_cents"]
            c.execute(
                "UPDATE sessions SET energy_wh = ?, amount_cents = ?, ticket_sent = 0 "
                "WHERE session_id = ?",
                (_wh(energy_kwh), to_cents(amount), session_id),
            )
            c.execute(
                "UPDATE drivers SET balance_cents = balance_cents - ? WHERE driver_id = ?",
                (extra, row["driver_id"]),
            )
            balance = c.execute(
                "SELECT balance_cents FROM drivers WHERE driver_id = ?", (row["driver_id"],)
            ).fetchone()
        return from_cents(balance["balance_cents"])

    def unsent_tickets(self) -> list[Session]:
        return self._sessions("status = 'ended' AND ticket_sent = 0", ())

    def mark_ticket_sent(self, session_id: str) -> None:
        self._db.execute("UPDATE sessions SET ticket_sent = 1 WHERE session_id = ?", (session_id,))

    def find_sessions(
        self,
        driver_id: str | None = None,
        cp_id: str | None = None,
        status: str | None = None,
        limit: int = 200,
        offset: int = 0,
    ) -> Sequence[Session]:
        """Newest first; `offset` pages through the rest (session id breaks ties, so pages are
        stable)."""
        clauses, args = [], []
        for column, value in (("driver_id", driver_id), ("cp_id", cp_id), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = " AND ".join(clauses) or "1 = 1"
        order = "ORDER BY started_at DESC, session_id DESC"
        page = f"LIMIT {int(limit)} OFFSET {int(offset)}"
        return self._sessions(f"{where} {order} {page}", tuple(args))

    def _one_session(self, where: str, arg: str) -> Session | None:
        found = self._sessions(where, (arg,))
        return found[0] if found else None

    def _sessions(self, where: str, args: tuple[object, ...]) -> list[Session]:
        rows = self._db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE {where}", args
        ).fetchall()
        return [self._session(r) for r in rows]

    @staticmethod
    def _session(row: Any) -> Session:
        started = _ts(row["started_at"])
        assert started is not None
        return Session(
            session_id=row["session_id"],
            driver_id=row["driver_id"],
            cp_id=row["cp_id"],
            price_eur_per_kwh=Decimal(row["price_eur_per_kwh"]),
            status=SessionStatus(row["status"]),
            started_at=started,
            energy_kwh=kwh(Decimal(row["energy_wh"]) / 1000),
            amount_eur=euros(from_cents(row["amount_cents"])),
            ended_at=_ts(row["ended_at"]),
            end_reason=None if row["end_reason"] is None else EndReason(row["end_reason"]),
        )

    # --- per-CP symmetric keys (sealed under Central's master key) ---------------------------

    def next_key_version(self, cp_id: str) -> int:
        with self._tx() as c:
            found = c.execute(
                "UPDATE charging_points SET key_version = key_version + 1 WHERE cp_id = ?",
                (cp_id,),
            ).rowcount
            if not found:
                raise LookupError(f"no CP {cp_id} to issue a key for")
            row = c.execute(
                "SELECT key_version FROM charging_points WHERE cp_id = ?", (cp_id,)
            ).fetchone()
        return int(row["key_version"])

    def key_versions(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT cp_id, key_version FROM charging_points WHERE key_version > 0"
        ).fetchall()
        return {r["cp_id"]: int(r["key_version"]) for r in rows}

    def save_cp_key(self, cp_id: str, version: int, sealed: str) -> None:
        self._db.execute(
            "INSERT INTO cp_keys (cp_id, version, sealed_key, issued_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (cp_id, version) DO UPDATE SET sealed_key = excluded.sealed_key",
            (cp_id, version, sealed, _now()),
        )

    def stored_cp_keys(self) -> list[StoredCpKey]:
        rows = self._db.execute(
            "SELECT cp_id, version, sealed_key FROM cp_keys ORDER BY cp_id, version"
        ).fetchall()
        return [StoredCpKey(r["cp_id"], int(r["version"]), r["sealed_key"]) for r in rows]

    def delete_cp_keys(self, cp_id: str, versions: Sequence[int] | None = None) -> None:
        if versions is None:
            self._db.execute("DELETE FROM cp_keys WHERE cp_id = ?", (cp_id,))
            return
        with self._tx() as c:
            for version in versions:
                c.execute("DELETE FROM cp_keys WHERE cp_id = ? AND version = ?", (cp_id, version))

    def set_keys_revoked(self, cp_id: str, revoked: bool) -> None:
        self._db.execute(
            "UPDATE charging_points SET keys_revoked = ? WHERE cp_id = ?", (int(revoked), cp_id)
        )

    def set_weather_alert(
        self, cp_id: str, city: str | None, temperature_c: float | None = None
    ) -> None:
        self._db.execute(
            "UPDATE charging_points SET weather_alert = ?, weather_city = ?, "
            "weather_temperature_c = ? WHERE cp_id = ?",
            (
                int(city is not None),
                city,
                None if temperature_c is None else repr(float(temperature_c)),
                cp_id,
            ),
        )

    # --- credentials (verifiers only) and the Registry's change feed -----------------------

    def enrol_cp(self, cp_id: str, location: str, price: Decimal, verifier: Verifier) -> bool:
        """Creates or updates the CP row and stores its verifier; False (and nothing changed)
        when the CP already has credentials.  Concurrent enrolments: exactly one wins."""
        try:
            with self._tx() as c:
                c.execute(
                    "INSERT INTO charging_points (cp_id, location, price_eur_per_kwh, "
                    "registered_at) VALUES (?, ?, ?, ?) ON CONFLICT (cp_id) DO UPDATE SET "
                    "location = excluded.location, price_eur_per_kwh = excluded.price_eur_per_kwh",
                    (cp_id, location, str(price), _now()),
                )
                added = c.execute(
                    "INSERT INTO cp_credentials (cp_id, salt, scrypt_n, scrypt_r, scrypt_p, "
                    "stored_key, server_key, issued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (cp_id) DO NOTHING",
                    (cp_id, *_verifier_row(verifier), _now()),
                ).rowcount
                if not added:
                    raise _Refused  # the CP row's new location and price are rolled back too
                self._change(c, cp_id, RegistryChangeKind.REGISTERED)
        except _Refused:
            return False
        return True

    def rotate_credentials(self, cp_id: str, verifier: Verifier) -> bool:
        with self._tx() as c:
            found = c.execute(
                "UPDATE cp_credentials SET salt = ?, scrypt_n = ?, scrypt_r = ?, scrypt_p = ?, "
                "stored_key = ?, server_key = ?, issued_at = ? WHERE cp_id = ?",
                (*_verifier_row(verifier), _now(), cp_id),
            ).rowcount
            if found:
                self._change(c, cp_id, RegistryChangeKind.ROTATED)
        return bool(found)

    def deregister_cp(self, cp_id: str) -> bool:
        with self._tx() as c:
            found = c.execute("DELETE FROM cp_credentials WHERE cp_id = ?", (cp_id,)).rowcount
            if found:
                self._change(c, cp_id, RegistryChangeKind.DEREGISTERED)
        return bool(found)

    def get_verifier(self, cp_id: str) -> Verifier | None:
        row = self._db.execute("SELECT * FROM cp_credentials WHERE cp_id = ?", (cp_id,)).fetchone()
        if row is None:
            return None
        kdf = KdfParams(unb64(row["salt"]), row["scrypt_n"], row["scrypt_r"], row["scrypt_p"])
        return Verifier(kdf, unb64(row["stored_key"]), unb64(row["server_key"]))

    def registered_cps(self) -> set[str]:
        return {r["cp_id"] for r in self._db.execute("SELECT cp_id FROM cp_credentials")}

    def registry_changes(self, after: int) -> list[RegistryChange]:
        rows = self._db.execute(
            "SELECT seq, cp_id, kind FROM registry_changes WHERE seq > ? ORDER BY seq", (after,)
        ).fetchall()
        return [RegistryChange(r["seq"], r["cp_id"], RegistryChangeKind(r["kind"])) for r in rows]

    def last_registry_change(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) AS seq FROM registry_changes")
        return int(row.fetchone()["seq"])

    def _change(self, c: _Db, cp_id: str, kind: RegistryChangeKind) -> None:
        """A row of the change feed.  Followers read it by `seq > after`, so a row must never
        commit after a later one: on PostgreSQL the writers take turns (SQLite's already do)."""
        if self._dialect.lock_changes:
            c.execute(self._dialect.lock_changes)
        c.execute(
            "INSERT INTO registry_changes (cp_id, kind, changed_at) VALUES (?, ?, ?)",
            (cp_id, kind.value, _now()),
        )

    # --- the audit log (append-only) -------------------------------------------------------

    def append_audit(self, entry: AuditEntry) -> None:
        self._db.execute(
            "INSERT INTO audit_log (at, action, actor, ip, outcome, cp_id, detail, params) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.at.isoformat(),
                entry.action.value,
                entry.actor,
                entry.ip,
                entry.outcome.value,
                entry.cp_id,
                entry.detail,
                json.dumps(dict(entry.params), sort_keys=True),
            ),
        )

    def find_audit(self, query: AuditQuery) -> Sequence[AuditEntry]:
        """Newest first, filtered, one page."""
        clauses, args = [], []
        for column, op, value in (
            ("at", ">=", None if query.since is None else query.since.isoformat()),
            ("at", "<", None if query.until is None else query.until.isoformat()),
            ("cp_id", "=", query.cp_id),
            ("action", "=", None if query.action is None else query.action.value),
            ("ip", "=", query.ip),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                args.append(value)
        where = " AND ".join(clauses) or "1 = 1"
        rows = self._db.execute(
            f"SELECT * FROM audit_log WHERE {where} ORDER BY seq DESC "
            f"LIMIT {int(query.limit)} OFFSET {int(query.offset)}",
            args,
        ).fetchall()
        return [
            AuditEntry(
                at=datetime.fromisoformat(r["at"]),
                action=AuditAction(r["action"]),
                actor=r["actor"],
                ip=r["ip"],
                outcome=Outcome(r["outcome"]),
                cp_id=r["cp_id"],
                detail=r["detail"],
                params=json.loads(r["params"]),
                seq=r["seq"],
            )
            for r in rows
        ]


def _verifier_row(v: Verifier) -> tuple[str, int, int, int, str, str]:
    return (b64(v.kdf.salt), v.kdf.n, v.kdf.r, v.kdf.p, b64(v.stored_key), b64(v.server_key))
