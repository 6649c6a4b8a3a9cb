-- Applied after the migrations when the timescaledb extension is available.
-- Idempotent: run on every `safeguard migrate`; migrate.py binds the retention in days.
CREATE EXTENSION IF NOT EXISTS timescaledb;
SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'), migrate_data => true, if_not_exists => true);
ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'site, device',
                          timescaledb.compress_orderby = 'ts DESC');
SELECT add_compression_policy('readings', INTERVAL '7 days', if_not_exists => true);
SELECT remove_retention_policy('readings', if_exists => true);
SELECT add_retention_policy('readings', make_interval(days => %(retention_days)s));
-- The compliance timeline (migrations/0003): a hypertable on its pieces' start, kept as long as readings.
-- migrate.py then makes compliance_daily a continuous aggregate of it (gateway/compliance/rollup.py).
SELECT create_hypertable('camera_timeline', by_range('since', INTERVAL '7 days'), migrate_data => true, if_not_exists => true);
SELECT remove_retention_policy('camera_timeline', if_exists => true);
SELECT add_retention_policy('camera_timeline', make_interval(days => %(retention_days)s));
