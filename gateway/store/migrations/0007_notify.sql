-- The notifier (issue 16, docs/operations.md "Notifications"): its cursor over alert_history, the
-- deliveries it scheduled (the outbox of its steps) and every attempt to make one.

-- Changes recorded before the notifier existed are not notified now: only new rows wait for it.
ALTER TABLE alert_history ADD COLUMN notified boolean NOT NULL DEFAULT true;
ALTER TABLE alert_history ALTER COLUMN notified SET DEFAULT false;
CREATE INDEX alert_history_unnotified ON alert_history (id) WHERE NOT notified;

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
