-- 0004: per-CP symmetric keys and the "keys revoked" mark (issue 14).
-- Portable SQL: the same file runs on SQLite and PostgreSQL.
-- A key row holds the key sealed under Central's master key (AES-GCM, base64): never in clear.
-- key_version counts up per CP and never goes back, so a revoked version is never reused.

ALTER TABLE charging_points ADD COLUMN key_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE charging_points ADD COLUMN keys_revoked INTEGER NOT NULL DEFAULT 0;

CREATE TABLE cp_keys (
    cp_id      TEXT NOT NULL REFERENCES charging_points (cp_id),
    version    INTEGER NOT NULL,
    sealed_key TEXT NOT NULL,
    issued_at  TEXT NOT NULL,
    PRIMARY KEY (cp_id, version)
);
