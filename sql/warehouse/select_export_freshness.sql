-- Per dataset: the last successful batch, the watermark, the last batch and its error, since when
-- the dataset has been failing and why its last window was held back (export_pipeline/freshness.py
-- copies this to the analysts' freshness file after every batch).
SELECT
    f.dataset,
    f.last_success_at,
    w.watermark,
    f.last_batch_at,
    f.last_batch_status,
    f.last_error,
    f.failing_since,
    f.window_held_back,
    now() AS recorded_at
FROM _export_freshness AS f
LEFT JOIN _export_watermarks AS w USING (dataset)
ORDER BY f.dataset
