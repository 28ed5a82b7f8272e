-- The dead-letter listing (`export-pipeline dead-letter list`): newest first, filtered, one page.
-- Every filter is optional (NULL = any); $limit NULL = no limit.
SELECT dead_letter_id, dataset, record_key, org_id, cursor_at, reason, failed_checks, status,
       attempt_count, first_seen_at, last_seen_at, last_attempt_at, next_retry_at, resolved_at,
       resolution_note, row_json
FROM dx_dead_letter
WHERE ($dataset IS NULL OR dataset = $dataset)
  AND ($status IS NULL OR status = $status)
  AND ($reason IS NULL OR reason = $reason)
  AND ($since IS NULL OR first_seen_at >= $since)
ORDER BY first_seen_at DESC, last_seen_at DESC, dataset, dead_letter_id
LIMIT $limit OFFSET $offset
