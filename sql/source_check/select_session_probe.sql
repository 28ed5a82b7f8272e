-- Reads back the probe setting written by set_session_probe.sql, and the backend serving this
-- statement: a pooling proxy may hand a later statement or transaction to another backend.
SELECT current_setting('export_pipeline.probe', true) AS probe, pg_backend_pid() AS backend_pid
