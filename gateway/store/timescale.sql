-- Applied after the migrations when TimescaleDB is usable; as one script: gateway/store/migrate.py
-- never splits it, so comments and literals may hold semicolons (this one does; the test suite
-- applies it on TimescaleDB, so a split would fail there). Idempotent: it runs on every
-- `safeguard migrate`. migrate.py sets safeguard.retention_days (readings_retention_days) for the
-- transaction.
CREATE EXTENSION IF NOT EXISTS timescaledb;
SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'), migrate_data => true, if_not_exists => true);
-- Compressed batches carry the min and max of what the supervisor filters on besides ts: the
-- storing transaction (the timeline's fresh readings, every minute) and the arrival (compliance on
-- request). Without them each run decompressed every compressed chunk to test txid.
ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'site, device',
                          timescaledb.compress_orderby = 'ts DESC',
                          timescaledb.sparse_index = 'minmax(txid), minmax(received_at)');
SELECT add_compression_policy('readings', INTERVAL '7 days', if_not_exists => true);
-- The compliance timeline (migrations/0003): a hypertable on its pieces' start, kept as long as readings.
-- migrate.py then makes compliance_daily a continuous aggregate of it (gateway/compliance/rollup.py).
SELECT create_hypertable('camera_timeline', by_range('since', INTERVAL '7 days'), migrate_data => true,
                         if_not_exists => true);
-- Retention of both: replaced only when the configured interval changed (a second migrate changes nothing).
SELECT remove_retention_policy(j.hypertable_name::regclass)
FROM timescaledb_information.jobs j
WHERE j.proc_name = 'policy_retention' AND j.hypertable_name IN ('readings', 'camera_timeline')
  AND (j.config->>'drop_after')::interval <> make_interval(days => current_setting('safeguard.retention_days')::int);
SELECT add_retention_policy(h, make_interval(days => current_setting('safeguard.retention_days')::int),
                            if_not_exists => true)
FROM unnest(ARRAY['readings', 'camera_timeline']::regclass[]) AS h;
