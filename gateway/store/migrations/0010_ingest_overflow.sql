-- Readings an overloaded alarm lane set aside so it could read on to the alarms behind them
-- (issue 10, gateway/ingest/overflow.py): raw, as they arrived, until a lane stores them. Rows
-- live here only while the gateway is behind; any worker drains them (FOR UPDATE SKIP LOCKED).
CREATE TABLE ingest_overflow (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    received_at double precision NOT NULL  -- epoch seconds of the arrival at the gateway
);
