-- Staged dead letters into dx_dead_letter. The id is derived from the content, so re-reading the
-- same bad row (the lookback overlap) refreshes last_seen_at instead of adding a second letter.
INSERT INTO dx_dead_letter
SELECT
    md5(concat_ws('|', $dataset, record_key, reason, row_json)) AS dead_letter_id,
    $dataset, $contract_version, record_key, org_id, cursor_at, reason, failed_checks, row_json,
    $batch_id, now(), now(), now(), 1, now() + to_seconds($retry_after_seconds), 'open', NULL, NULL
FROM _stage_dead_letters
QUALIFY row_number() OVER (
    PARTITION BY md5(concat_ws('|', $dataset, record_key, reason, row_json))
) = 1
ON CONFLICT (dead_letter_id) DO UPDATE SET
    last_seen_at = excluded.last_seen_at,
    batch_id = excluded.batch_id
