-- The declared schema of Safety Guard: what `safeguard migrate` must produce.
-- tests/integration/test_schema.py checks that the migrations give exactly this.

CREATE TABLE sites (
    id               text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name             text NOT NULL DEFAULT '',
    city             text NOT NULL DEFAULT '',
    county           text NOT NULL DEFAULT '',
    category         text NOT NULL DEFAULT '',
    address          text NOT NULL DEFAULT '',
    cameras_required integer NOT NULL DEFAULT 0 CHECK (cameras_required >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    contact_name     text NOT NULL DEFAULT '',  -- migration 0008
    contact_phone    text NOT NULL DEFAULT ''
);

-- The edge agent of a site, from its retained status message (birth or Last Will).
CREATE TABLE agents (
    site          text PRIMARY KEY REFERENCES sites (id) ON DELETE CASCADE,
    online        boolean NOT NULL,
    boot          text NOT NULL,
    agent_version text,
    heartbeat_s   integer CHECK (heartbeat_s > 0),
    status_at     timestamptz NOT NULL
);

CREATE TABLE devices (
    site       text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    id         text NOT NULL CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    kind       text NOT NULL CHECK (kind IN ('camera', 'smoke', 'exit')),
    name       text,
    location   text,
    declared   boolean NOT NULL DEFAULT false,  -- listed in the agent's status message
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, id)
);

-- Latest state per device, upserted once per ingest batch.
CREATE TABLE device_state (
    site      text NOT NULL,
    device    text NOT NULL,
    last_seen timestamptz NOT NULL,   -- arrival time of the newest message
    last_ts   timestamptz NOT NULL,   -- sender's observation time of the state below
    boot      text NOT NULL,
    seq       bigint NOT NULL,
    status    text NOT NULL,          -- stream (camera) or state (smoke, exit)
    reading   jsonb NOT NULL,         -- the full latest payload
    deadline  timestamptz NOT NULL,   -- last_seen + heartbeat_s x missed_heartbeats
    offline   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (site, device),
    FOREIGN KEY (site, device) REFERENCES devices (site, id) ON DELETE CASCADE
);
-- The supervisor's sweep: one range scan over devices past their deadline.
CREATE INDEX device_state_deadline ON device_state (deadline) WHERE NOT offline;

-- Raw time series. Idempotent on (site, device, boot, seq) through reading_keys below (a
-- unique index here would need ts as well, as a TimescaleDB hypertable's time column).
CREATE TABLE readings (
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    site        text NOT NULL,
    device      text NOT NULL,
    kind        text NOT NULL,
    boot        text NOT NULL,
    seq         bigint NOT NULL,
    status      text NOT NULL,
    payload     jsonb NOT NULL,
    txid        xid8 DEFAULT pg_current_xact_id()  -- the storing transaction: the compliance timeline's cue
);
CREATE INDEX readings_ts_brin ON readings USING brin (ts);
CREATE INDEX readings_device_ts ON readings (site, device, ts DESC);
CREATE INDEX readings_camera_txid ON readings (txid) WHERE kind = 'camera';
CREATE INDEX readings_camera_arrival ON readings (site, device, received_at) WHERE kind = 'camera';

-- The exactly-once key of a reading, without ts (migrations/0005): ingest stores a reading only
-- when its key is new here. A plain table on both storage paths; pruned with the readings.
CREATE TABLE reading_keys (
    site        text NOT NULL,
    device      text NOT NULL,
    boot        text NOT NULL,
    seq         bigint NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (site, device, boot, seq)
);
CREATE INDEX reading_keys_received ON reading_keys USING brin (received_at);

-- Each agent's smoothed clock skew (its readings' ts minus their arrival), behind the clock_skew alert.
CREATE TABLE agent_clocks (
    site       text PRIMARY KEY REFERENCES sites (id) ON DELETE CASCADE,
    skew_s     float8 NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE snapshots (
    id          bigserial PRIMARY KEY,
    site        text NOT NULL,
    device      text NOT NULL,
    received_at timestamptz NOT NULL,
    jpeg        bytea NOT NULL,
    FOREIGN KEY (site, device) REFERENCES devices (site, id) ON DELETE CASCADE
);
CREATE INDEX snapshots_device ON snapshots (site, device, received_at DESC);

CREATE TABLE alerts (
    id              bigserial PRIMARY KEY,
    site            text NOT NULL REFERENCES sites (id),
    device          text,
    kind            text NOT NULL,
    severity        text NOT NULL CHECK (severity IN ('critical', 'major', 'minor')),
    state           text NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    opened_at       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text,
    resolved_at     timestamptz,
    resolved_by     text,
    count           integer NOT NULL DEFAULT 1,
    detail          jsonb NOT NULL DEFAULT '{}'
);
-- DESIGN section 4: one alert per (site, device, kind) is open at a time.
CREATE UNIQUE INDEX alerts_one_open ON alerts (site, coalesce(device, ''), kind) WHERE state <> 'resolved';
CREATE INDEX alerts_site ON alerts (site, id DESC);
CREATE INDEX alerts_unresolved ON alerts (severity, opened_at) WHERE state <> 'resolved';

-- Every alert change; its id is the SSE event id and the relay's cursor.
CREATE TABLE alert_history (
    id       bigserial PRIMARY KEY,
    alert_id bigint NOT NULL REFERENCES alerts (id),
    site     text NOT NULL,
    at       timestamptz NOT NULL,
    state    text NOT NULL,
    action   text NOT NULL,
    by       text NOT NULL,
    note     text,
    alert    jsonb NOT NULL,  -- the alert as the API shows it, right after this change
    relayed  boolean NOT NULL DEFAULT false,  -- published to sg/v1/alerts/{site} by the leader
    notified boolean NOT NULL DEFAULT false   -- routed by the notifier (gateway/notify)
);
CREATE INDEX alert_history_alert ON alert_history (alert_id, id);
CREATE INDEX alert_history_unrelayed ON alert_history (id) WHERE NOT relayed;
CREATE INDEX alert_history_at ON alert_history (at);
CREATE INDEX alert_history_unnotified ON alert_history (id) WHERE NOT notified;

CREATE TABLE dead_letters (
    id              bigserial PRIMARY KEY,
    received_at     timestamptz NOT NULL,
    topic           text NOT NULL,
    code            text NOT NULL,
    reason          text NOT NULL,
    payload_excerpt text NOT NULL,
    payload_size    integer NOT NULL
);
CREATE INDEX dead_letters_received ON dead_letters (received_at);

CREATE TABLE api_tokens (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL,
    role       text NOT NULL CHECK (role IN ('fire_brigade', 'inspector', 'institution', 'admin')),
    site       text REFERENCES sites (id) ON DELETE CASCADE,
    token_hash bytea NOT NULL UNIQUE,  -- sha256 of the token; the token itself is never stored
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    expires_at timestamptz,  -- NULL: until revoked
    CHECK ((role = 'institution') = (site IS NOT NULL))
);

-- The problem list (issue 6 point 2, docs/problems.md): standing hazards and non-compliance
-- with rectification deadlines, and every change to them (who and when).
CREATE TABLE problems (
    id           bigserial PRIMARY KEY,
    site         text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    device       text,  -- NULL for site-level problems (not_compliant)
    kind         text NOT NULL CHECK (kind IN ('exit_blocked', 'detector_fault', 'detector_offline',
                                               'camera_offline', 'not_compliant', 'detector_untested')),
    status       text NOT NULL CHECK (status IN ('open', 'overdue', 'rectified')),
    opened_at    timestamptz NOT NULL,
    since        timestamptz NOT NULL,  -- when the condition began
    deadline     timestamptz NOT NULL,
    clear_since  timestamptz,           -- condition seen clear since; NULL while it holds
    by_hand      boolean NOT NULL DEFAULT false,  -- reopened by hand: not rectified automatically
    rectified_at timestamptz,
    closed_by    text,                  -- who closed it by hand; NULL when rectified automatically
    updated_at   timestamptz NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}',
    CHECK ((status = 'rectified') = (rectified_at IS NOT NULL))
);
-- One problem per (site, device, kind) is unrectified at a time.
CREATE UNIQUE INDEX problems_one_open ON problems (site, coalesce(device, ''), kind) WHERE status <> 'rectified';
CREATE INDEX problems_site ON problems (site, id DESC);
-- The last closing by hand per key (it holds back reopening while the same condition lasts).
CREATE INDEX problems_closed_by_hand ON problems (site, kind, rectified_at DESC) WHERE closed_by IS NOT NULL;

CREATE TABLE problem_history (
    id         bigserial PRIMARY KEY,
    problem_id bigint NOT NULL REFERENCES problems (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL,
    action     text NOT NULL CHECK (action IN ('opened', 'overdue', 'rectified', 'closed', 'reopened', 'note')),
    status     text NOT NULL,  -- the problem's status right after this change
    by         text NOT NULL,
    note       text
);
CREATE INDEX problem_history_problem ON problem_history (problem_id, id);

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

-- Broker identity (issue 15): a site's broker secret, as its Mosquitto password hash ($7$...,
-- PBKDF2-SHA512). The secret itself is shown once when issued and never stored;
-- `safeguard broker-config` writes these into the broker's password file.
CREATE TABLE broker_credentials (
    site          text PRIMARY KEY REFERENCES sites (id) ON DELETE CASCADE,
    password_hash text NOT NULL CHECK (password_hash LIKE '$7$%'),
    issued_at     timestamptz NOT NULL DEFAULT now()
);

-- The notifier (gateway/notify): the deliveries it scheduled and every attempt to make one.
CREATE TABLE notifications (
    id         bigserial PRIMARY KEY,
    alert_id   bigint NOT NULL REFERENCES alerts (id),
    site       text NOT NULL,
    purpose    text NOT NULL CHECK (purpose IN ('alert', 'all_clear', 'digest')),
    route      text NOT NULL,
    step       integer NOT NULL CHECK (step >= 0),
    channel    text NOT NULL,
    due_at     timestamptz NOT NULL,
    state      text NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'suppressed', 'cancelled')),
    attempts   integer NOT NULL DEFAULT 0,
    next_at    timestamptz NOT NULL,  -- pending: when due (or retried); sending: the end of the claim's lease
    created_at timestamptz NOT NULL,
    done_at    timestamptz,
    note       text,                  -- why suppressed or cancelled; the last error
    UNIQUE (alert_id, purpose, channel)  -- a channel is told once per purpose: a restart never doubles a step
);
CREATE INDEX notifications_due ON notifications (next_at) WHERE state IN ('pending', 'sending');
CREATE INDEX notifications_alert ON notifications (alert_id, id);

CREATE TABLE notification_attempts (
    id              bigserial PRIMARY KEY,
    notification_id bigint NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    alert_id        bigint NOT NULL,
    channel         text NOT NULL,
    target          text NOT NULL,  -- without secrets (a webhook URL's query is left out)
    attempt         integer NOT NULL,
    at              timestamptz NOT NULL,
    result          text NOT NULL CHECK (result IN ('sending', 'ok', 'error', 'timeout', 'interrupted')),
    response_code   integer,
    latency_ms      float8,
    error           text
);
CREATE INDEX notification_attempts_notification ON notification_attempts (notification_id, id);
CREATE INDEX notification_attempts_channel ON notification_attempts (channel, id DESC);

-- Readings an overloaded alarm lane set aside, raw, until a lane stores them (migration 0010).
CREATE TABLE ingest_overflow (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    received_at double precision NOT NULL
);
