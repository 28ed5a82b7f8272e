-- dx_export_freshness, in the analysts' catalog: per dataset, the last successful batch, the
-- watermark and how far behind now it is, the last error and since when the dataset has been
-- failing (null when healthy), and why its window was last held back. Reads the small Parquet
-- file the pipeline rewrites after every batch (read_parquet of its escaped path), so it is
-- current even when every dataset fails and no lake publish runs.
CREATE OR REPLACE VIEW dx_export_freshness AS
SELECT
    dataset,
    last_success_at,
    watermark,
    now() - watermark AS lag,
    last_batch_status,
    last_batch_at,
    last_error,
    failing_since,
    window_held_back,
    recorded_at
FROM {freshness_source}
