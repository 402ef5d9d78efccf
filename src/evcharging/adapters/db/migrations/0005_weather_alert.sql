-- 0005: EV_W's weather alert per CP (issue 15), kept across Central restarts: with EV_W or its
-- provider down, a CP keeps its last decision. Portable SQL: the same file on SQLite and PostgreSQL.
-- The reading is kept as text (the decimal EV_W sent), only to be shown.

ALTER TABLE charging_points ADD COLUMN weather_alert INTEGER NOT NULL DEFAULT 0;
ALTER TABLE charging_points ADD COLUMN weather_city TEXT;
ALTER TABLE charging_points ADD COLUMN weather_temperature_c TEXT;
