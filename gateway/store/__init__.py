"""PostgreSQL: pool, named SQL, migrations, repositories."""

# Days raw readings and dead letters are kept: the default of readings_retention_days and
# dead_letter_retention_days, and of ``migrate``'s retention policy. Here, not in migrate.py, so
# that the settings can name it without importing psycopg.
RETENTION_DAYS = 90
