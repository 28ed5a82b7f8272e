-- Keep a dataset's last good state and current failure with each ledger row it gets.
INSERT INTO _export_freshness AS f
VALUES (
    $dataset,
    CASE WHEN $status = 'succeeded' THEN $finished_at END,
    $finished_at,
    $status,
    CASE WHEN $status = 'failed' THEN $error END,
    CASE WHEN $status = 'failed' THEN $started_at END,
    $window_note
)
ON CONFLICT (dataset) DO UPDATE SET
    last_success_at = coalesce(excluded.last_success_at, f.last_success_at),
    last_batch_at = excluded.last_batch_at,
    last_batch_status = excluded.last_batch_status,
    last_error = excluded.last_error,
    failing_since = CASE WHEN excluded.last_batch_status = 'succeeded' THEN NULL
                         ELSE coalesce(f.failing_since, excluded.failing_since) END,
    window_held_back = excluded.window_held_back
