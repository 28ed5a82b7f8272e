-- How far committed data is complete on this source (source_session.read_horizon):
-- on a primary, the oldest transaction still open in this database by another session (it can
-- commit rows whose cursor is its start time: now() inside it); sessions of this pipeline are
-- read-only and left out. Other roles' sessions are visible only with pg_read_all_stats
-- (pg_monitor). On a standby: whether replay trails what was received, and how far it got.
WITH oldest AS (
    SELECT xact_start, pid, application_name, usename
    FROM pg_stat_activity
    WHERE datname = current_database()
      AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
      AND xact_start IS NOT NULL
      AND coalesce(application_name, '') NOT LIKE 'export\_pipeline%'
    ORDER BY xact_start
    LIMIT 1
)
SELECT
    pg_is_in_recovery() AS standby,
    pg_has_role('pg_read_all_stats', 'USAGE') AS sees_all_sessions,
    current_user::text AS role,
    (SELECT xact_start FROM oldest) AS oldest_xact_start,
    (SELECT pid FROM oldest) AS oldest_pid,
    (SELECT application_name FROM oldest) AS oldest_application,
    (SELECT usename::text FROM oldest) AS oldest_user,
    CASE WHEN pg_is_in_recovery()
        THEN pg_last_wal_receive_lsn() IS DISTINCT FROM pg_last_wal_replay_lsn() END
        AS replay_behind,
    CASE WHEN pg_is_in_recovery() THEN pg_last_xact_replay_timestamp() END AS replayed_until,
    CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS replay_paused
