INSERT INTO _export_batches (
    batch_id, dataset, run_id, mode, window_start, window_end,
    extracted, inserted, updated, unchanged, stale, dead_lettered,
    started_at, finished_at, duration_ms, status, error, window_note
) VALUES (
    $batch_id, $dataset, $run_id, $mode, $window_start, $window_end,
    $extracted, $inserted, $updated, $unchanged, $stale, $dead_lettered,
    $started_at, $finished_at, $duration_ms, $status, $error, $window_note
)
