-- Bind the extraction window to session settings. The window query reads them back with
-- current_setting(...), so its values travel as bind parameters while the query itself stays
-- parameter-free and ADBC can stream it through COPY in bounded memory.
SELECT
    set_config('export_pipeline.window_start', $1, false),
    set_config('export_pipeline.window_end', $2, false),
    set_config('export_pipeline.out_of_scope', $3, false),
    set_config('export_pipeline.org_id', $4, false)
