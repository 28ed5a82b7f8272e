-- One dataset's last good state and current failure (status, the freshness view): watermark,
-- last batch, last successful batch, since when it has been failing, open/exhausted letters.
WITH b AS (
    SELECT * FROM _export_batches WHERE dataset = $d
), good AS (
    SELECT max(finished_at) AS good_at FROM b WHERE status = 'succeeded'
), last AS (
    SELECT status, finished_at, error, window_note FROM b ORDER BY finished_at DESC LIMIT 1
)
SELECT
    (SELECT max(watermark) FROM _export_watermarks WHERE dataset = $d) AS watermark,
    (SELECT status FROM last) AS last_batch_status,
    (SELECT finished_at FROM last) AS last_batch_at,
    (SELECT error FROM last) AS last_batch_error,
    (SELECT window_note FROM last) AS last_window_note,
    (SELECT good_at FROM good) AS last_success_at,
    (SELECT min(started_at) FROM b
     WHERE status = 'failed' AND started_at > coalesce((SELECT good_at FROM good), '-infinity'))
        AS failing_since,
    (SELECT count(*) FROM dx_dead_letter WHERE dataset = $d AND status = 'open')
        AS open_dead_letters,
    (SELECT count(*) FROM dx_dead_letter WHERE dataset = $d AND status = 'exhausted')
        AS exhausted_dead_letters
