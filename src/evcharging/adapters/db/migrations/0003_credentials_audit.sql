-- 0003: CP credentials (verifiers only), the Registry's change feed, and the audit log.
-- Portable SQL: the same file runs on SQLite and PostgreSQL (dialect-only parts, such as the
-- audit log's append-only guard, are in 0003_credentials_audit.<dialect>.sql beside it).

CREATE TABLE cp_credentials (
    cp_id       TEXT PRIMARY KEY REFERENCES charging_points (cp_id),
    salt        TEXT NOT NULL,      -- base64url
    scrypt_n    INTEGER NOT NULL,
    scrypt_r    INTEGER NOT NULL,
    scrypt_p    INTEGER NOT NULL,
    stored_key  TEXT NOT NULL,      -- base64url SHA-256(client key): not the secret
    server_key  TEXT NOT NULL,      -- base64url
    issued_at   TEXT NOT NULL
);

CREATE TABLE registry_changes (
    seq        INTEGER PRIMARY KEY,
    cp_id      TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('registered', 'deregistered', 'rotated')),
    changed_at TEXT NOT NULL
);

CREATE TABLE audit_log (
    seq     INTEGER PRIMARY KEY,
    at      TEXT NOT NULL,         -- ISO 8601, UTC
    action  TEXT NOT NULL,
    actor   TEXT NOT NULL,
    ip      TEXT NOT NULL,
    outcome TEXT NOT NULL,
    cp_id   TEXT,
    detail  TEXT NOT NULL,
    params  TEXT NOT NULL          -- JSON object of short strings
);
CREATE INDEX audit_log_by_time ON audit_log (at);
CREATE INDEX audit_log_by_cp ON audit_log (cp_id, at);
