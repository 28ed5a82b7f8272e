-- Writes a session setting, the way the extract binds its window (set_config, then a separate
-- statement reads it back), to see whether this connection keeps it.
SELECT set_config('export_pipeline.probe', $1, false) AS probe, pg_backend_pid() AS backend_pid
