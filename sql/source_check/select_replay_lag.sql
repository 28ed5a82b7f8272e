-- On a standby: how far replay trails. The last replayed commit's age is the lag while the
-- primary is writing; received = replayed means replay has caught up with what arrived.
SELECT
    extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
        AS replay_lag_seconds,
    pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() AS replay_caught_up,
    pg_is_wal_replay_paused() AS replay_paused
