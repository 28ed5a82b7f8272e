-- Bind a set of primary keys (a JSON array of key objects) for select_keys.sql, as a bind
-- parameter, keeping the select itself parameter-free so ADBC can stream it.
SELECT set_config('export_pipeline.keys', $1, false)
