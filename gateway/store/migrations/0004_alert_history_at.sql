-- Alert history by time (Grafana's alert panels, reports over a period): a range scan, not a
-- scan of every change ever recorded (alerts and their history are never deleted).
CREATE INDEX alert_history_at ON alert_history (at);
