-- Per dataset, from the ledger: the last successful batch, the watermark, the last batch and its
-- error, since when the dataset has been failing (its first failed batch after the last success)
-- and why its last window was held back. Written for analysts by export_pipeline/freshness.py.
WITH per_dataset AS (
    SELECT
        dataset,
        max(finished_at) FILTER (WHERE status = 'succeeded') AS last_success_at,
        max(finished_at) AS last_batch_at,
        arg_max(status, finished_at) AS last_batch_status,
        arg_max(error, finished_at) AS last_batch_error,
        arg_max(window_note, finished_at) AS last_window_note
    FROM _export_batches
    GROUP BY dataset
)
SELECT
    p.dataset,
    p.last_success_at,
    w.watermark,
    p.last_batch_at,
    p.last_batch_status,
    CASE WHEN p.last_batch_status = 'failed' THEN p.last_batch_error END AS last_error,
    (SELECT min(b.started_at) FROM _export_batches AS b
     WHERE b.dataset = p.dataset AND b.status = 'failed'
       AND b.started_at > coalesce(p.last_success_at, '-infinity'::TIMESTAMPTZ)) AS failing_since,
    p.last_window_note AS window_held_back,
    now() AS recorded_at
FROM per_dataset AS p
LEFT JOIN _export_watermarks AS w USING (dataset)
ORDER BY p.dataset
