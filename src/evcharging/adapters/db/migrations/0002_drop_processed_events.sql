-- 0002: processed_events goes. Nothing read it: every handler is idempotent by its own rule
-- (sessions by request id and session id, tickets by ticket_sent), not by an event-id ledger.
DROP TABLE IF EXISTS processed_events;
