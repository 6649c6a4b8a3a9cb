-- Daily compliance figures (issue 6 point 1, docs/compliance.md "Daily figures").
--
-- Which transaction stored each reading: the supervisor finds the readings committed since its
-- last run by this, not by arrival time, so a reading committed late (after a database outage)
-- still reaches the timeline. A NULL txid predates this migration.
ALTER TABLE readings ADD COLUMN txid xid8;
ALTER TABLE readings ALTER COLUMN txid SET DEFAULT pg_current_xact_id();
CREATE INDEX readings_camera_txid ON readings (txid) WHERE kind = 'camera';
-- A camera's heartbeats in arrival order (the timeline, and compliance on request).
CREATE INDEX readings_camera_arrival ON readings (site, device, received_at) WHERE kind = 'camera';

-- Each camera's availability timeline in pieces of constant state, none crossing a local
-- midnight (gateway/compliance/daily.py says what each column means).
CREATE TABLE camera_timeline (
    site         text NOT NULL,
    device       text NOT NULL,
    since        timestamptz NOT NULL,
    until        timestamptz NOT NULL,
    online       boolean NOT NULL,
    heard        boolean NOT NULL,
    outage_start boolean NOT NULL,
    outage_since timestamptz,
    delay_s      float8,
    CHECK (until >= since)
);
CREATE INDEX camera_timeline_device ON camera_timeline (site, device, until);

-- How far each camera's timeline is written (exclusive).
CREATE TABLE timeline_cursors (
    site   text NOT NULL,
    device text NOT NULL,
    upto   timestamptz NOT NULL,
    PRIMARY KEY (site, device),
    FOREIGN KEY (site, device) REFERENCES devices (site, id) ON DELETE CASCADE
);

-- One row: the snapshot the last run read (readings it could not see are new to the next run),
-- the time every cursor has reached, and (plain PostgreSQL) the first day the rollup has not
-- materialised yet.
CREATE TABLE timeline_progress (
    one                boolean PRIMARY KEY DEFAULT true CHECK (one),
    snapshot           pg_snapshot,
    horizon            timestamptz,
    materialized_until timestamptz
);
INSERT INTO timeline_progress DEFAULT VALUES;

-- Per camera per local day: the rollup's table on plain PostgreSQL; with TimescaleDB it is
-- replaced by a continuous aggregate of the same query (gateway/compliance/rollup.py).
CREATE TABLE compliance_daily (
    site              text NOT NULL,
    device            text NOT NULL,
    day               timestamptz NOT NULL,  -- the local midnight starting the day
    online_us         bigint NOT NULL,
    outages           bigint NOT NULL,
    longest_outage_us bigint NOT NULL,
    heartbeats        bigint NOT NULL,
    delay_p50_s       float8,
    delay_p95_s       float8,
    reporting         boolean NOT NULL,
    PRIMARY KEY (site, device, day)
);
