-- 0001: drivers, charging points, sessions and processed events.
-- Money is integer cents, energy integer watt-hours, prices decimal strings (exact).
CREATE TABLE drivers (
    driver_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    balance_cents INTEGER NOT NULL
);

CREATE TABLE charging_points (
    cp_id             TEXT PRIMARY KEY,
    location          TEXT NOT NULL,
    price_eur_per_kwh TEXT NOT NULL,
    admin_state       TEXT NOT NULL DEFAULT 'active' CHECK (admin_state IN ('active', 'stopped')),
    error_simulated   INTEGER NOT NULL DEFAULT 0,
    registered_at     TEXT NOT NULL
);

CREATE TABLE sessions (
    session_id        TEXT PRIMARY KEY,
    request_id        TEXT UNIQUE,
    driver_id         TEXT NOT NULL REFERENCES drivers (driver_id),
    cp_id             TEXT NOT NULL REFERENCES charging_points (cp_id),
    price_eur_per_kwh TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('authorised', 'supplying', 'ended')),
    started_at        TEXT NOT NULL,
    ended_at          TEXT,
    energy_wh         INTEGER NOT NULL DEFAULT 0,
    amount_cents      INTEGER NOT NULL DEFAULT 0,
    end_reason        TEXT,
    ticket_sent       INTEGER NOT NULL DEFAULT 0
);

-- At most one open session per CP and per driver: the database refuses a double booking.
CREATE UNIQUE INDEX sessions_one_open_per_cp ON sessions (cp_id) WHERE status != 'ended';
CREATE UNIQUE INDEX sessions_one_open_per_driver ON sessions (driver_id) WHERE status != 'ended';
CREATE INDEX sessions_by_driver ON sessions (driver_id, started_at);

CREATE TABLE processed_events (
    event_id     TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    processed_at TEXT NOT NULL
);
