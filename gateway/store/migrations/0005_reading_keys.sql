-- Issue 15: a reading is stored once per (site, device, boot, seq), whatever its ts. readings_once
-- holds ts as well (a TimescaleDB hypertable's unique index must contain its time column), so the
-- same (boot, seq) re-sent with another ts was stored again. This plain table (never a hypertable,
-- on both storage paths) holds each key once; ingest inserts here first and stores only the
-- readings whose key was new. received_at: the supervisor prunes keys with the readings' retention.
-- readings_once goes: the key table does its job, and one unique index per reading is enough.
CREATE TABLE reading_keys (
    site        text NOT NULL,
    device      text NOT NULL,
    boot        text NOT NULL,
    seq         bigint NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (site, device, boot, seq)
);
CREATE INDEX reading_keys_received ON reading_keys USING brin (received_at);
-- The keys of the last 7 days' readings: a repeat comes from a redelivery or an agent's resend,
-- within hours or a day of the first copy (the broker's session, the agent's outbox). (All of
-- a province's 90 days would be billions of rows, too many for a migration.)
INSERT INTO reading_keys (site, device, boot, seq, received_at)
SELECT site, device, boot, seq, min(received_at) FROM readings WHERE ts >= now() - interval '7 days'
GROUP BY site, device, boot, seq;
ALTER TABLE readings DROP CONSTRAINT readings_once;

-- Each agent's smoothed clock skew (its readings' ts minus their arrival), behind the clock_skew alert.
CREATE TABLE agent_clocks (
    site       text PRIMARY KEY REFERENCES sites (id) ON DELETE CASCADE,
    skew_s     float8 NOT NULL,
    updated_at timestamptz NOT NULL
);
