INSERT INTO _export_batches VALUES (
    $batch_id, $dataset, $run_id, $mode, $window_start, $window_end,
    $extracted, $inserted, $updated, $unchanged, $stale, $dead_lettered,
    $started_at, $finished_at, $duration_ms, $status, $error
)
