-- A key that was dead-lettered again with other content: its older letters are superseded by
-- the new one (which carries the current row), so each key has one letter to act on.
UPDATE dx_dead_letter
SET status = 'resolved',
    resolved_at = now(),
    resolution_note = 'superseded by a newer dead letter of the same key (batch ' || $batch_id || ')'
WHERE dataset = $dataset
  AND status <> 'resolved'
  AND batch_id <> $batch_id
  AND record_key::VARCHAR IN (SELECT record_key FROM _stage_dead_letters)
